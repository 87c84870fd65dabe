/* egret: the SPANK interface as egret uses it (Slurm 22.05 numbering, unchanged through 26.05). */
#ifndef EGRET_SPANK_H
#define EGRET_SPANK_H
#include "slurm_errno.h"
#include "slurm_version.h"

typedef struct spank_handle *spank_t;

/* Items for spank_get_item(), in Slurm's order. */
enum spank_item {
	S_JOB_UID, S_JOB_GID, S_JOB_ID, S_JOB_STEPID, S_JOB_NNODES, S_JOB_NODEID,
	S_JOB_LOCAL_TASK_COUNT, S_JOB_TOTAL_TASK_COUNT, S_JOB_NCPUS, S_JOB_ARGV, S_JOB_ENV,
	S_TASK_ID, S_TASK_GLOBAL_ID, S_TASK_EXIT_STATUS, S_TASK_PID, S_JOB_PID_TO_GLOBAL_ID,
	S_JOB_PID_TO_LOCAL_ID, S_JOB_LOCAL_TO_GLOBAL_ID, S_JOB_GLOBAL_TO_LOCAL_ID,
	S_JOB_SUPPLEMENTARY_GIDS, S_SLURM_VERSION, S_SLURM_VERSION_MAJOR, S_SLURM_VERSION_MINOR,
	S_SLURM_VERSION_MICRO, S_STEP_CPUS_PER_TASK, S_JOB_ALLOC_CORES, S_JOB_ALLOC_MEM,
	S_STEP_ALLOC_CORES, S_STEP_ALLOC_MEM, S_SLURM_RESTART_COUNT, S_JOB_ARRAY_ID,
	S_JOB_ARRAY_TASK_ID
};
typedef enum spank_item spank_item_t;
typedef slurm_err_t spank_err_t;

enum spank_context {
	S_CTX_ERROR, S_CTX_LOCAL, S_CTX_REMOTE, S_CTX_ALLOCATOR, S_CTX_SLURMD, S_CTX_JOB_SCRIPT
};
typedef enum spank_context spank_context_t;

typedef int (*spank_opt_cb_f)(int val, const char *optarg, int remote);

struct spank_option {
	char *name;
	char *arginfo;
	char *usage;
	int has_arg;
	int val;
	spank_opt_cb_f cb;
};

#define SPANK_OPTION_MAXLEN 75

int spank_remote(spank_t spank);
spank_context_t spank_context(void);
spank_err_t spank_option_register(spank_t spank, struct spank_option *opt);
spank_err_t spank_option_getopt(spank_t spank, struct spank_option *opt, char **optarg);
spank_err_t spank_get_item(spank_t spank, spank_item_t item, ...);
spank_err_t spank_getenv(spank_t spank, const char *var, char *buf, int len);
spank_err_t spank_setenv(spank_t spank, const char *var, const char *val, int overwrite);
spank_err_t spank_unsetenv(spank_t spank, const char *var);
void slurm_info(const char *format, ...);
void slurm_error(const char *format, ...);
void slurm_verbose(const char *format, ...);
void slurm_debug(const char *format, ...);
void slurm_spank_log(const char *format, ...);
#endif
