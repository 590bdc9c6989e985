//! Schema migrations: the SQL files under `migrations/` (PostgreSQL) and `migrations/sqlite/`
//! (the embedded store), applied in order, each once, recorded with a checksum.

use sha3::{Digest, Keccak256};

/// One schema step.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in increasing order; recorded in `ledger_migrations`.
    pub version: u32,
    /// Short name (the file's name without the number).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl Migration {
    /// Keccak-256 of the SQL, hex: a migration edited after it was applied is refused.
    pub fn checksum(&self) -> String {
        hex::encode(Keccak256::digest(self.sql.as_bytes()))
    }
}

/// PostgreSQL migrations, in order.
pub const PG_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "ledger",
    sql: include_str!("../../../migrations/0001_ledger.sql"),
}];

/// SQLite migrations, in order (the same versions as PostgreSQL's).
pub const SQLITE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "ledger",
    sql: include_str!("../../../migrations/sqlite/0001_ledger.sql"),
}];

/// Key of the PostgreSQL advisory lock that serialises migrators ("BLYLEDGR" in ASCII).
pub(crate) const PG_MIGRATION_LOCK_KEY: i64 = 0x424C_594C_4544_4752;

/// Checks the applied `(version, checksum)` rows against `known`; returns the migrations still
/// to apply.
pub(crate) fn pending(
    known: &'static [Migration],
    applied: &[(u32, String)],
) -> crate::Result<Vec<Migration>> {
    for (version, checksum) in applied {
        match known.iter().find(|m| m.version == *version) {
            None => {
                return Err(crate::LedgerError::Migration {
                    version: *version,
                    reason: "applied to this database but unknown to this build (newer code?)"
                        .into(),
                });
            }
            Some(m) if m.checksum() != *checksum => {
                return Err(crate::LedgerError::Migration {
                    version: *version,
                    reason: "its SQL changed after it was applied".into(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_match_between_stores() {
        for list in [PG_MIGRATIONS, SQLITE_MIGRATIONS] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
        }
        let pg: Vec<u32> = PG_MIGRATIONS.iter().map(|m| m.version).collect();
        let sqlite: Vec<u32> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(pg, sqlite);
    }

    #[test]
    fn pending_refuses_unknown_and_edited() {
        assert_eq!(
            pending(PG_MIGRATIONS, &[]).unwrap().len(),
            PG_MIGRATIONS.len()
        );
        let applied = [(1, PG_MIGRATIONS[0].checksum())];
        assert!(pending(PG_MIGRATIONS, &applied).unwrap().is_empty());
        assert!(pending(PG_MIGRATIONS, &[(1, "00".into())]).is_err());
        assert!(pending(PG_MIGRATIONS, &[(99, "00".into())]).is_err());
    }
}
