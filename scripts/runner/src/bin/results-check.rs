//! `results-check FILE...`: reads each results file into the contract's records
//! (`abi::tool::results`, through `runner::read_records`) and says how many of each kind it holds,
//! or which line does not follow the contract and why (the field missing, misspelled or of
//! the wrong type). For files written by tools outside the Rust types (the Python steps of
//! `scripts/bench`). A file with `window` records is also held to `sched::windows::problems`
//! (the windows tile the interval and add up to each domain's record). Exit status: 0 every file is well-formed, 1 one is not, 2 no file given.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use runner::read_records;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() || files.iter().any(|f| f.starts_with('-')) {
        eprintln!("usage: results-check FILE...");
        return ExitCode::from(2);
    }
    let mut bad = false;
    for file in &files {
        match read_records(Path::new(file)) {
            Ok(records) => {
                let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
                for r in &records {
                    *kinds.entry(r.kind()).or_default() += 1;
                }
                let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
                println!("{file}: {} records ({})", records.len(), kinds.join(", "));
                for problem in sched::windows::problems(&records) {
                    eprintln!("results-check: {file}: {problem}");
                    bad = true;
                }
            }
            Err(e) => {
                eprintln!("results-check: {e}");
                bad = true;
            }
        }
    }
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
