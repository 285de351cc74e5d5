#pragma once
// Preemption: SIGTERM or SIGUSR1 (Slurm's --signal=USR1@90) asks the run to stop. The
// handler only sets a flag; the trainer shares it with every rank at the next step
// boundary (it rides in the gradient all-reduce), rank 0 checkpoints, and all ranks exit
// with kExitPreempted.
namespace difftrain {

constexpr int kExitPreempted = 75;  // EX_TEMPFAIL: a checkpoint was written; run again to resume

void install_stop_signal_handlers();
bool stop_requested();
void request_stop();  // as a signal would (tests)
void clear_stop_request();

}  // namespace difftrain
