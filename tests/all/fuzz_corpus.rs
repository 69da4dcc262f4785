//! The fuzz targets over their committed corpora, in the ordinary test
//! build: every input `scripts/fuzz` ever kept (crash-fixed ones included)
//! goes through the same body, decoded the same way, plus seeded mutations
//! of each. Coverage-guided fuzzing itself is `scripts/fuzz` (it needs its
//! own instrumented build of the whole crate).

use std::path::Path;

#[path = "../../fuzz/bodies.rs"]
mod bodies;

/// Mutations tried per corpus input (`SEEDGATE_FUZZ_MUTATIONS`).
fn mutations() -> usize {
    std::env::var("SEEDGATE_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// A copy of `input` with a few bytes changed, inserted or cut.
fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(0..3) {
            0 if !out.is_empty() => {
                let i = rng.usize(..out.len());
                out[i] = rng.u8(..);
            }
            1 => {
                let i = rng.usize(..=out.len());
                out.insert(i, rng.u8(..));
            }
            _ if !out.is_empty() => {
                let i = rng.usize(..out.len());
                out.truncate(i.max(1).min(out.len()));
            }
            _ => out.push(rng.u8(..)),
        }
    }
    out
}

#[test]
fn every_fuzz_target_holds_over_its_corpus_and_seeded_mutations() {
    // The bodies assert; keep the panic hook quiet and report per input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut rng = fastrand::Rng::with_seed(1);
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for target in bodies::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut runs = 0;
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let mut inputs = vec![data.clone()];
            inputs.extend((0..mutations()).map(|_| mutate(&mut rng, &data)));
            for (i, input) in inputs.iter().enumerate() {
                runs += 1;
                if std::panic::catch_unwind(|| bodies::run(target, input)).is_err() {
                    let what = if i == 0 { "as committed" } else { "mutated" };
                    failures.push(format!("{target}: {} ({what}): {input:?}", file.display()));
                }
            }
        }
        counts.push(format!("{target}: {} inputs, {runs} runs", files.len()));
        assert!(
            !files.is_empty(),
            "{target}: the corpus in {} is empty",
            dir.display()
        );
    }
    std::panic::set_hook(hook);
    eprintln!("{}", counts.join("; "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
