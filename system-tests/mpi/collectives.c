/* Real collectives with checked results, so a broken transport (a host libucs loading the
 * image's UCX modules, say) fails here rather than in a one-message ping:
 *   MPI_Allreduce (sum and max of per-rank values), MPI_Bcast (a 1 MiB buffer from the last
 *   rank), MPI_Alltoall (each rank sends rank*1000+dest to every dest).
 * Rank 0 prints "collectives ok size=S" when every rank's checks pass; a rank whose check
 * fails prints "collectives FAILED rank=R: WHAT" and the program exits 1. Used by
 * tests/hooks_mpi.rs. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define BCAST_INTS (256 * 1024)

static int fail(int rank, const char *what)
{
    printf("collectives FAILED rank=%d: %s\n", rank, what);
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv)
{
    int rank, size, bad = 0, all_bad = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    long mine = rank + 1, sum = 0, max = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&mine, &max, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (sum != (long)size * (size + 1) / 2 || max != size)
        bad |= fail(rank, "MPI_Allreduce");

    int *buf = malloc(BCAST_INTS * sizeof *buf);
    for (int i = 0; i < BCAST_INTS; i++)
        buf[i] = rank == size - 1 ? i ^ 0x5a5a : -1;
    MPI_Bcast(buf, BCAST_INTS, MPI_INT, size - 1, MPI_COMM_WORLD);
    for (int i = 0; i < BCAST_INTS; i++)
        if (buf[i] != (i ^ 0x5a5a)) {
            bad |= fail(rank, "MPI_Bcast");
            break;
        }
    free(buf);

    int *send = malloc(size * sizeof *send), *recv = malloc(size * sizeof *recv);
    for (int d = 0; d < size; d++) {
        send[d] = rank * 1000 + d;
        recv[d] = -1;
    }
    MPI_Alltoall(send, 1, MPI_INT, recv, 1, MPI_INT, MPI_COMM_WORLD);
    for (int s = 0; s < size; s++)
        if (recv[s] != s * 1000 + rank) {
            bad |= fail(rank, "MPI_Alltoall");
            break;
        }
    free(send);
    free(recv);

    MPI_Allreduce(&bad, &all_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && !all_bad)
        printf("collectives ok size=%d\n", size);
    MPI_Finalize();
    return all_bad;
}
