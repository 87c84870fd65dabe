/* Ping-pong latency between ranks 0 and 1: `mpi-pingpong [BYTES [ITERATIONS]]` (default 8 bytes,
 * 10000 iterations after 1000 warm-up round trips). Rank 0 prints one line:
 *   pingpong bytes=B iterations=N latency_us=L
 * where L is half the mean round-trip time in microseconds. Used by scripts/bench/mpi-pingpong.sh. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int bytes = argc > 1 ? atoi(argv[1]) : 8;
    int iters = argc > 2 ? atoi(argv[2]) : 10000;
    int warmup = 1000;
    if (size < 2 || bytes < 0 || iters <= 0) {
        if (rank == 0)
            fprintf(stderr, "mpi-pingpong: needs 2 ranks, BYTES >= 0, ITERATIONS > 0\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    char *buf = calloc(bytes > 0 ? bytes : 1, 1);
    double t0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
        }
        if (rank == 0) {
            MPI_Send(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (rank == 1) {
            MPI_Recv(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
    }
    double t = MPI_Wtime() - t0;
    if (rank == 0)
        printf("pingpong bytes=%d iterations=%d latency_us=%.3f\n", bytes, iters, t / iters / 2 * 1e6);
    free(buf);
    MPI_Finalize();
    return 0;
}
