//! The patterns of a hook's `when` conditions: Go/podman regular expressions. Almost all are a
//! whole-string literal (`^com.hooks.mpi.enabled$`, `^true$`), which is matched here without
//! building a regular expression: compiling the two dozen patterns of a site's hooks directory
//! took 1 ms of every `egret run` and step, for a comparison of a few bytes each.

use regex::Regex;

/// One compiled pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `^...$` of literal characters and `.` (any character but a newline): one entry per
    /// character of the matched text, `None` for `.`.
    Whole(Vec<Option<char>>),
    Regex(Regex),
}

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern, regex::Error> {
        match whole_literal(pattern) {
            Some(chars) => Ok(Pattern::Whole(chars)),
            None => Regex::new(pattern).map(Pattern::Regex),
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Regex(re) => re.is_match(text),
            Pattern::Whole(want) => {
                let mut got = text.chars();
                for w in want {
                    match (got.next(), w) {
                        (Some(c), Some(w)) if c == *w => {}
                        (Some(c), None) if c != '\n' => {}
                        _ => return false,
                    }
                }
                got.next().is_none()
            }
        }
    }
}

/// `^X$` where X is literal characters, `\` + punctuation (that character) and `.`; `None` for
/// anything else (left to the regex engine).
fn whole_literal(pattern: &str) -> Option<Vec<Option<char>>> {
    let inner = pattern.strip_prefix('^')?.strip_suffix('$')?;
    if inner.ends_with('\\') && !inner.ends_with("\\\\") {
        return None;
    }
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next()?;
                if !e.is_ascii_punctuation() {
                    // \d, \w, \b, \n ...: classes and assertions.
                    return None;
                }
                out.push(Some(e));
            }
            '.' => out.push(None),
            '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^' | '$' => return None,
            c => out.push(Some(c)),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern agrees with the regex engine on every text.
    #[test]
    fn literal_patterns_match_exactly_what_the_regex_would() {
        let patterns = [
            "^com.hooks.mpi.enabled$",
            r"^com\.hooks\.timestamp\.enabled$",
            "^true$",
            "^$",
            "^a.b$",
            r"^a\\b$",
            r"^x\-y$",
            "^(true|1)$",
            "^tr.*$",
            "true",
            r"^\d+$",
            "^é.$",
        ];
        let texts = [
            "com.hooks.mpi.enabled",
            "comXhooksXmpiXenabled",
            "com.hooks.mpi.enabled2",
            "com.hooks.mpi.enable",
            "com.hooks.timestamp.enabled",
            "comXhooks.timestamp.enabled",
            "true",
            "true\n",
            "truex",
            "1",
            "",
            "a\nb",
            "a.b",
            "aXb",
            r"a\b",
            "x-y",
            "12",
            "éa",
            "é",
        ];
        for p in patterns {
            let ours = Pattern::new(p).unwrap();
            let re = Regex::new(p).unwrap();
            for t in texts {
                assert_eq!(ours.is_match(t), re.is_match(t), "pattern {p:?} on {t:?}");
            }
        }
        assert!(matches!(
            Pattern::new("^com.hooks.mpi.enabled$").unwrap(),
            Pattern::Whole(_)
        ));
        assert!(matches!(Pattern::new(r"^\d+$").unwrap(), Pattern::Regex(_)));
        assert!(Pattern::new("^(unclosed$").is_err());
    }
}
