/* Each rank prints one line saying which MPI library it runs on:
 *   rank=R size=S sum=0+1+..+S-1 node=SLURMD_NODENAME lib=PATH mount=ROOT version=FIRST-LINE-OF-MPI_Get_library_version
 * PATH is the libmpi/libmpich file mapped into this process (from /proc/self/maps); ROOT is the
 * source of the mount at PATH when PATH is itself a mount point (a bind-mounted host library,
 * from /proc/self/mountinfo), else "-". Used by tests/hooks_mpi.rs. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mapped_mpi_lib(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    snprintf(out, len, "-");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (!path)
            continue;
        path[strcspn(path, "\n")] = 0;
        const char *base = strrchr(path, '/') + 1;
        if (strncmp(base, "libmpi.so", 9) == 0 || strncmp(base, "libmpich.so", 11) == 0) {
            snprintf(out, len, "%s", path);
            break;
        }
    }
    fclose(f);
}

/* mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT ...; the last mount at PATH wins (stacking). */
static void mount_root_of(const char *path, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[8192], root[4096], point[4096];
    snprintf(out, len, "-");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) == 2 && strcmp(point, path) == 0)
            snprintf(out, len, "%s", root);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    int rank, size, vlen;
    char version[MPI_MAX_LIBRARY_VERSION_STRING], lib[4096], root[4096];

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_library_version(version, &vlen);
    version[strcspn(version, "\n")] = 0;
    mapped_mpi_lib(lib, sizeof lib);
    mount_root_of(lib, root, sizeof root);
    /* A collective, so every rank really talked to the others. */
    int sum = 0;
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    const char *node = getenv("SLURMD_NODENAME");
    printf("rank=%d size=%d sum=%d node=%s lib=%s mount=%s version=%s\n", rank, size, sum,
           node ? node : "-", lib, root, version);
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
