//! `egret images`: the caller's stored images (or the centralized repository's) as a table.

use std::process::ExitCode;

use egret_engine::image::store::{IndexEntry, Store, StoreError};

use super::{centralized_dir, StoreAccessError};
use crate::context::Context;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Show the manifest digests.
    #[arg(long)]
    digests: bool,
    /// List the centralized repository instead of your own images.
    #[arg(long)]
    centralized_repository: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Store(#[from] StoreAccessError),
    #[error(transparent)]
    List(#[from] StoreError),
}

pub fn images(c: &Context, a: ImagesArgs) -> Result<ExitCode, ImagesError> {
    let timings = &c.config.repository_metadata_lock_timings;
    let store = if a.centralized_repository {
        Store::open_centralized_readonly(centralized_dir(c)?, timings)
    } else {
        Store::open_readonly(&c.config.local_repository_base_dir, c.uid, c.gid, timings)
    };
    let entries = store.list()?;
    // An index entry whose squashfs is gone (being removed, say) is not an image.
    let present = |e: &IndexEntry| {
        store
            .image_paths(&e.registry_digest)
            .is_ok_and(|(sqfs, _)| sqfs.exists())
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .filter(|e| present(e))
        .map(|e| {
            let mut row = vec![
                e.short_repository(),
                if e.tag.is_empty() {
                    "<none>".into()
                } else {
                    e.tag.clone()
                },
            ];
            if a.digests {
                row.push(e.registry_digest.clone());
            }
            row.push(e.id.chars().take(12).collect());
            row.push(e.created.clone());
            row.push(e.datasize.clone());
            row.push(e.server.clone());
            row
        })
        .collect();
    let mut header = vec!["REPOSITORY", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE", "SERVER"]);
    print!("{}", table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns three spaces apart, as `docker images` prints them.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x\n");
    }
}
