//! `stopgap patch test [ID|FILE]`: replay patch vectors through the engine, no network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use stopgap_engine::replay::judge_vector;
use stopgap_patch::{load_dir, load_file, Patch, PatchSet};

/// The first line of a request, printable, cut to `width`.
fn first_line(req: &[u8], width: usize) -> String {
    let end = req
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(req.len());
    let mut s = stopgap_engine::audit::excerpt(&req[..end]);
    if s.chars().count() > width {
        s = s.chars().take(width.saturating_sub(1)).collect::<String>() + "…";
    }
    s
}

/// Runs every vector of the chosen patches alone and with the whole directory applied.
pub fn test(target: Option<&str>, dir: &Path) -> anyhow::Result<ExitCode> {
    let mut library = match load_dir(dir) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let chosen: Vec<Patch> = match target {
        None => library.clone(),
        Some(t) if Path::new(t).is_file() => {
            let p = match load_file(&PathBuf::from(t)) {
                Ok(p) => p,
                Err(d) => {
                    eprintln!("{}", stopgap_patch::Diagnostics(d));
                    return Ok(ExitCode::FAILURE);
                }
            };
            // A file under test replaces the library's copy of the same patch.
            library.retain(|q| q.id != p.id);
            library.push(p.clone());
            vec![p]
        }
        Some(id) => {
            let found: Vec<Patch> = library.iter().filter(|p| p.id == id).cloned().collect();
            if found.is_empty() {
                return Err(anyhow!(
                    "no patch `{id}` in {} (pass a patch id or a .toml file)",
                    dir.display()
                ));
            }
            found
        }
    };
    let all = Arc::new(PatchSet::from_patches(1, library));
    let (mut total, mut failed) = (0, 0);
    println!(
        "{:<14} {:<8} {:<58} {:<7} RESULT",
        "PATCH", "VECTOR", "REQUEST", "VERDICT"
    );
    for p in &chosen {
        if p.vectors.is_empty() {
            println!("{:<14} -        (no vectors)", p.id);
            failed += 1;
            continue;
        }
        let alone = Arc::new(PatchSet::from_patches(1, vec![p.clone()]));
        for v in &p.vectors {
            total += 1;
            let verdict = judge_vector(p, v, &alone, true).and_then(|ok| {
                judge_vector(p, v, &all, false)
                    .map(|_| ok)
                    .map_err(|e| format!("with the whole library: {e}"))
            });
            let (mark, detail) = match verdict {
                Ok(d) => ("PASS", d),
                Err(e) => {
                    failed += 1;
                    ("FAIL", e)
                }
            };
            println!(
                "{:<14} {:<8} {:<58} {:<7} {detail}",
                p.id,
                v.kind,
                first_line(&v.request, 58),
                mark
            );
        }
    }
    println!(
        "\n{total} vectors of {} patch(es): {} passed, {failed} failed (each alone and with the {} patches of {})",
        chosen.len(),
        total - failed,
        all.len(),
        dir.display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
