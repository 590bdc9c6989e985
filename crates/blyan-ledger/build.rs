//! Rebuilds the crate when a migration file is added or edited. `refinery::embed_migrations!`
//! embeds the files it finds under `migrations/` at compile time; without this, Cargo would not
//! notice a new file there and would keep the old migration set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
