# Sourced by the scripts that start daemons (registry-up.sh, cluster-up.sh, shared-fs-up.sh).
#
# A daemon must keep no descriptor of its caller's beyond stdin/out/err: one started under
# `flock LOCK make up` would otherwise inherit the lock's descriptor and hold the lock for as
# long as it runs, so every later `flock LOCK ...` would wait forever.

# close_inherited_fds: closes every descriptor above 2 of the calling (sub)shell.
close_inherited_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-"; fi
    done
}

# detached CMD ARGS...: runs CMD (a daemon that forks itself away) without those descriptors.
detached() {
    (
        close_inherited_fds
        exec "$@"
    )
}
