//! The text of the files the SSH hook puts into a container: the environment replayed at login,
//! the session script, the `ssh` wrapper, the profile snippet, and the fixes to `/etc/passwd`
//! and `/etc/shells` dropbear needs. Pure functions, so the quoting is tested on its own.

use crate::ssh::CONTAINER_DIR;

/// Variables a session must keep from dropbear rather than take from the container: they
/// describe the login itself.
const SESSION_VARS: &[&str] = &[
    "HOME", "USER", "LOGNAME", "SHELL", "TERM", "SHLVL", "PWD", "OLDPWD", "_", "MAIL",
];

/// `value` as one single-quoted shell word: `'` becomes `'\''`, everything else is literal
/// (spaces, `$`, backquotes, newlines).
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `export NAME='VALUE'` for every variable of the container's environment a login should get
/// back (the last definition of a name wins, as in the container). Names a shell cannot export
/// are skipped.
pub fn environment(env: &[String]) -> String {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for kv in env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if !valid_name(k) || SESSION_VARS.contains(&k) || k.starts_with("SSH_") {
            continue;
        }
        match seen.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => seen.push((k, v)),
        }
    }
    let mut out = String::from("# egret --container-ssh: the container's environment\n");
    for (k, v) in seen {
        out.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    out
}

/// dropbear's forced command: every session (a login or `ssh host cmd`) first gets the
/// container's environment back, then runs what the client asked for with the user's shell.
pub fn session_script() -> String {
    format!(
        "#!/bin/sh\n\
         # egret --container-ssh: run by dropbear for every session\n\
         . {CONTAINER_DIR}/environment\n\
         if [ -n \"$SSH_ORIGINAL_COMMAND\" ]; then\n\
         \x20   exec \"${{SHELL:-/bin/sh}}\" -c \"$SSH_ORIGINAL_COMMAND\"\n\
         fi\n\
         exec \"${{SHELL:-/bin/sh}}\" -l\n"
    )
}

/// `/usr/bin/ssh` in the container: dropbear's client with the user's key and this site's port,
/// run with the host's loader and libraries (the image's may be missing or incompatible). A
/// later `-p` given by the user wins.
pub fn ssh_wrapper(loader: &str, port: u16, client_key: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # egret --container-ssh: ssh to the other containers of the job step\n\
         exec {CONTAINER_DIR}/lib/{loader} --library-path {CONTAINER_DIR}/lib \
         {CONTAINER_DIR}/libexec/dbclient -y -i {} -p {port} \"$@\"\n",
        shell_quote(client_key)
    )
}

/// `/etc/profile.d/egret-ssh.sh`: login shells read `/etc/profile`, which may reset `PATH`;
/// this puts the container's values back for SSH logins.
pub fn profile_snippet() -> String {
    format!(
        "# egret --container-ssh: SSH logins get the container's environment back\n\
         if [ -n \"$SSH_CONNECTION\" ] && [ -r {CONTAINER_DIR}/environment ]; then\n\
         \x20   . {CONTAINER_DIR}/environment\n\
         fi\n"
    )
}

/// `passwd` with the login shell of `uid` replaced by `/bin/sh` when `shell_exists` says the
/// image lacks it (dropbear refuses users whose shell is missing). `None`: nothing to change.
/// Also returns the shell the user ends up with.
pub fn fix_passwd(
    passwd: &str,
    uid: u32,
    shell_exists: impl Fn(&str) -> bool,
) -> (Option<String>, String) {
    let uid_s = uid.to_string();
    let mut changed = false;
    let mut shell = "/bin/sh".to_string();
    let mut out = String::with_capacity(passwd.len());
    for line in passwd.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let fields: Vec<&str> = body.split(':').collect();
        if fields.len() == 7 && fields[2] == uid_s {
            let current = fields[6];
            if !current.is_empty() && shell_exists(current) {
                shell = current.to_string();
            } else if current != "/bin/sh" {
                let mut f = fields.clone();
                f[6] = "/bin/sh";
                out.push_str(&f.join(":"));
                out.push_str(&line[body.len()..]);
                changed = true;
                continue;
            }
        }
        out.push_str(line);
    }
    (changed.then_some(out), shell)
}

/// `/etc/shells` listing `shell` (dropbear only accepts listed shells; without the file the C
/// library only knows `/bin/sh` and `/bin/csh`). `None`: nothing to change.
pub fn fix_shells(shells: Option<&str>, shell: &str) -> Option<String> {
    match shells {
        Some(s) if s.lines().any(|l| l.trim() == shell) => None,
        Some(s) => {
            let mut out = s.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(shell);
            out.push('\n');
            Some(out)
        }
        None if shell == "/bin/sh" || shell == "/bin/csh" => None,
        None => Some(format!("/bin/sh\n{shell}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn environment_survives_a_real_shell() {
        let env: Vec<String> = [
            "PATH=/opt/x/bin:/usr/bin",
            "NCCL_NET=AWS Libfabric",
            "QUOTES=it's \"q\" $HOME `id` \\ end",
            "NL=a\nb",
            "EMPTY=",
            "HOME=/container/home",
            "SSH_CONNECTION=x",
            "1BAD=x",
            "DUP=1",
            "DUP=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let text = environment(&env);
        assert!(!text.contains("HOME="), "{text}");
        assert!(!text.contains("1BAD"), "{text}");
        let script = format!(
            "{text}\nprintf '%s|' \"$PATH\" \"$NCCL_NET\" \"$QUOTES\" \"$NL\" \"${{EMPTY-unset}}\" \"$DUP\""
        );
        let out = Command::new("/bin/sh")
            .args(["-c", &script])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/opt/x/bin:/usr/bin|AWS Libfabric|it's \"q\" $HOME `id` \\ end|a\nb||2|"
        );
    }

    #[test]
    fn scripts_name_the_port_and_the_private_dir() {
        let w = ssh_wrapper("ld-linux-x86-64.so.2", 15263, "/home/u/.ssh/id_dropbear");
        assert!(w.starts_with("#!/bin/sh\n"));
        assert!(w.contains(" -p 15263 \"$@\""), "{w}");
        assert!(w.contains("/opt/egret/ssh/lib/ld-linux-x86-64.so.2 --library-path"));
        for s in [session_script(), profile_snippet(), w] {
            let out = Command::new("/bin/sh")
                .args(["-n", "-c", &s])
                .output()
                .unwrap();
            assert!(out.status.success(), "syntax: {s}\n{out:?}");
        }
    }

    #[test]
    fn passwd_and_shells() {
        let passwd = "root:x:0:0::/root:/bin/bash\nu:x:4242:4242::/home/u:/bin/bash\n";
        let (fixed, shell) = fix_passwd(passwd, 4242, |s| s == "/bin/sh");
        assert_eq!(
            fixed.as_deref(),
            Some("root:x:0:0::/root:/bin/bash\nu:x:4242:4242::/home/u:/bin/sh\n")
        );
        assert_eq!(shell, "/bin/sh");
        let (fixed, shell) = fix_passwd(passwd, 4242, |_| true);
        assert_eq!((fixed, shell.as_str()), (None, "/bin/bash"));
        assert_eq!(fix_shells(None, "/bin/sh"), None);
        assert_eq!(
            fix_shells(None, "/bin/bash").as_deref(),
            Some("/bin/sh\n/bin/bash\n")
        );
        assert_eq!(fix_shells(Some("/bin/sh\n/bin/bash\n"), "/bin/bash"), None);
        assert_eq!(
            fix_shells(Some("/bin/sh"), "/bin/zsh").as_deref(),
            Some("/bin/sh\n/bin/zsh\n")
        );
    }
}
