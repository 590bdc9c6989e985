//! How hard a store works to keep what it acknowledged: one setting for the chain store and the
//! node's config, so the YAML value and the store's behaviour cannot drift apart.

/// Whether an acknowledged write survives power loss, or only a crash of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Durability {
    /// Data and the write-ahead log are fsynced before a write is acknowledged: it survives
    /// `kill -9` and power loss.
    #[default]
    Synced,
    /// Nothing is fsynced: an acknowledged write survives `kill -9` (the page cache holds it)
    /// but the newest writes may be lost on power loss. Never half a write.
    Unsynced,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_names_are_snake_case() {
        let synced: Durability = serde_json::from_str("\"synced\"").unwrap();
        let unsynced: Durability = serde_json::from_str("\"unsynced\"").unwrap();
        assert_eq!(
            (synced, unsynced),
            (Durability::Synced, Durability::Unsynced)
        );
        assert!(serde_json::from_str::<Durability>("\"Synced\"").is_err());
        assert_eq!(Durability::default(), Durability::Synced);
    }
}
