//! Writes the start of a corpus's held-out text, the text training never saw, as an evaluation
//! pool: `cargo run -p blyan-moe --example eval_pool -- CORPUS_DIR PER_MILLE BYTES OUT_FILE`.
//! The shipped model's pool (`models/default/eval/`) is made by `scripts/corpus/eval-pool.sh`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [corpus, per_mille, bytes, out] = args.as_slice() else {
        return Err("usage: eval_pool CORPUS_DIR PER_MILLE BYTES OUT_FILE".into());
    };
    let read = blyan_moe::read_corpus(&[PathBuf::from(corpus)])?;
    let split = blyan_moe::split_texts(&read.documents, per_mille.parse()?)?;
    let limit: usize = bytes.parse()?;
    let mut end = limit.min(split.held_out.len());
    while !split.held_out.is_char_boundary(end) {
        end -= 1;
    }
    // End at a line end, so the pool holds whole lines.
    if let Some(newline) = split.held_out[..end].rfind('\n') {
        end = newline + 1;
    }
    std::fs::write(out, &split.held_out[..end])?;
    println!(
        "{out}: {end} bytes of {} held-out bytes ({} documents read)",
        split.held_out.len(),
        read.documents.len()
    );
    Ok(())
}
