//! Signals to node processes, and starting them so that they die with the test.

use std::process::Command;

/// The signals the harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to the process `pid`; false when there is no such process.
#[allow(unsafe_code)]
pub(crate) fn send(pid: u32, signal: Signal) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negative pids name process groups: never ours to signal.
        return false;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; pid names one process.
    unsafe { libc::kill(pid, signal.number()) == 0 }
}

/// Makes the child get SIGKILL when the thread that spawned it ends, so that nodes do not
/// outlive a test process that was itself killed (a panicking test is handled by `Drop`).
///
/// The death signal follows the spawning *thread*: spawn nodes from the test's own thread (or
/// a runtime worker), never from a short-lived thread such as `spawn_blocking`'s.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
