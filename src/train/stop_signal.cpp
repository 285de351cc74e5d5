#include "difftrain/train/stop_signal.h"

#include <unistd.h>

#include <csignal>

namespace difftrain {

namespace {
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_training = 0;

// Only async-signal-safe calls here: write(2) and _exit(2).
[[noreturn]] void exit_now(int signal, const char* message, std::size_t length) {
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, length);
  ::_exit(128 + signal);
}

extern "C" void on_stop_signal(int signal) {
  if (!g_training) {
    static const char message[] = "difftrain: stopped by a signal during set-up; nothing was trained yet\n";
    exit_now(signal, message, sizeof message - 1);
  }
  if (signal == SIGINT && g_stop) {
    static const char message[] = "difftrain: second interrupt; exiting without a checkpoint\n";
    exit_now(signal, message, sizeof message - 1);
  }
  g_stop = 1;
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls (MPI, file I/O) carry on while training
  for (int signal : {SIGTERM, SIGUSR1, SIGINT, SIGHUP}) {
    struct sigaction previous {};
    sigaction(signal, nullptr, &previous);
    if (previous.sa_handler == SIG_IGN) continue;
    sigaction(signal, &action, nullptr);
  }
}

void begin_training_phase() { g_training = 1; }
bool stop_requested() { return g_stop != 0; }
void request_stop() { g_stop = 1; }
void clear_stop_request() { g_stop = 0; }

}  // namespace difftrain
