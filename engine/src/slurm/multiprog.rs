//! `srun --multi-prog FILE`: each task runs the command its line of FILE names. slurmstepd
//! picks a task's line only when it execs the task, after the plugin has taken the task over,
//! so egret reads the file itself (in the task, as the user) with Slurm's rules: a line is
//! `RANKS COMMAND [ARGS...]`, RANKS a comma-separated list of ranks and ranges or `*`, words
//! separated by blanks, `#` starting a comment; in the arguments `%t` is the task's rank and
//! `%o` its offset within the line's ranks.

/// The variable srun's side of the plugin sets when it was started with `--multi-prog`.
pub const MARKER: &str = "EGRET_MULTI_PROG";

/// Why a task's command cannot be read from the multi-prog file; the user's one line (without
/// `egret: `). Lines are numbered from 1, as an editor shows them.
#[derive(Debug, thiserror::Error)]
pub enum MultiProgError {
    #[error("--multi-prog line {line}: {source}")]
    BadRanks {
        line: usize,
        #[source]
        source: RanksError,
    },
    #[error("--multi-prog line {line}: no command")]
    NoCommand { line: usize },
    #[error("--multi-prog: no line for task {rank}")]
    NoLine { rank: u32 },
}

/// Why the RANKS field of a line is not a list of ranks.
#[derive(Debug, thiserror::Error)]
pub enum RanksError {
    #[error("'{ranks}' is not a list of task ranks")]
    NotRanks { ranks: String },
    #[error("'{range}' is an empty range")]
    EmptyRange { range: String },
}

/// The argv of task `rank` from the text of a multi-prog file.
pub fn argv_for(text: &str, rank: u32) -> Result<Vec<String>, MultiProgError> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let ranks = words.next().unwrap_or("");
        let Some(offset) = offset_in(ranks, rank).map_err(|source| MultiProgError::BadRanks {
            line: n + 1,
            source,
        })?
        else {
            continue;
        };
        let argv: Vec<String> = words
            .map(|w| {
                w.replace("%t", &rank.to_string())
                    .replace("%o", &offset.to_string())
            })
            .collect();
        if argv.is_empty() {
            return Err(MultiProgError::NoCommand { line: n + 1 });
        }
        return Ok(argv);
    }
    Err(MultiProgError::NoLine { rank })
}

/// Where `rank` sits among `ranks` (`*`, `3`, `0,2-4`); None when it is not there.
fn offset_in(ranks: &str, rank: u32) -> Result<Option<u32>, RanksError> {
    if ranks == "*" {
        return Ok(Some(rank));
    }
    let mut seen = 0u32;
    for part in ranks.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.parse::<u32>().map_err(|_| RanksError::NotRanks {
                ranks: ranks.to_string(),
            })
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi < lo {
            return Err(RanksError::EmptyRange {
                range: part.to_string(),
            });
        }
        if (lo..=hi).contains(&rank) {
            return Ok(Some(seen + rank - lo));
        }
        seen += hi - lo + 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# comment\n0 echo zero %t\n\n1-2,5 echo task=%t offset=%o # trailing\n* sh -c true\n";

    #[test]
    fn lines_ranks_and_substitutions() {
        assert_eq!(argv_for(FILE, 0).unwrap(), ["echo", "zero", "0"]);
        assert_eq!(argv_for(FILE, 2).unwrap(), ["echo", "task=2", "offset=1"]);
        assert_eq!(argv_for(FILE, 5).unwrap(), ["echo", "task=5", "offset=2"]);
        assert_eq!(argv_for(FILE, 3).unwrap(), ["sh", "-c", "true"]);
    }

    // The task prints these lines: each text is pinned byte for byte.
    #[test]
    fn bad_files_are_one_line_errors() {
        let err = |text: &str, rank| argv_for(text, rank).unwrap_err().to_string();
        assert_eq!(err("0 true\n", 1), "--multi-prog: no line for task 1");
        assert_eq!(
            err("x true\n", 0),
            "--multi-prog line 1: 'x' is not a list of task ranks"
        );
        assert_eq!(
            err("# c\n0,3-1 true\n", 5),
            "--multi-prog line 2: '3-1' is an empty range"
        );
        assert_eq!(err("0\n", 0), "--multi-prog line 1: no command");
    }
}
