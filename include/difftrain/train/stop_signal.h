#pragma once
// Stopping a run without losing it. SIGTERM, SIGUSR1 (Slurm's --signal=USR1@90), SIGINT
// (Ctrl-C) and SIGHUP (a closed terminal) all ask the run to stop:
// - during set-up (reading the config, the data, the checkpoint; the first collectives)
//   nothing has been trained yet and every file is written atomically, so the process
//   ends at once with status 128 + signal, even when blocked (a FIFO that never opens);
// - once training runs, the handler only sets a flag; the trainer shares it with every
//   rank at the next step boundary (it rides in the gradient all-reduce), rank 0
//   checkpoints, and all ranks exit with kExitPreempted. A second SIGINT ends the process
//   at once, without that checkpoint.
// A signal the process was started with ignored (nohup, a background job) stays ignored.
namespace difftrain {

constexpr int kExitPreempted = 75;  // EX_TEMPFAIL: a checkpoint was written; run again to resume

void install_stop_signal_handlers();
// From here on a stop signal means "checkpoint at the next step, then exit".
void begin_training_phase();
bool stop_requested();
void request_stop();  // as a signal would (tests)
void clear_stop_request();

}  // namespace difftrain
