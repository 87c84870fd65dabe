/* egret: the Slurm release these ABI notes describe (major.minor must match the running Slurm). */
#ifndef EGRET_SLURM_VERSION_H
#define EGRET_SLURM_VERSION_H
#define SLURM_VERSION_NUMBER 0x160508
#endif
