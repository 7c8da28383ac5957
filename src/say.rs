//! The one way ddcolor writes to its standard streams, so that no write can block a run, panic
//! or lose a result: messages for people go to stderr through a queue that one printer thread
//! empties (a full, closed or stalled stderr drops them, counted, and the run goes on), and
//! lines on stdout come back as `io::Result`s for the caller to act on. `eprintln!` and
//! `println!` panic when the stream is closed or full; clippy.toml disallows them.
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Messages waiting for the printer; past this, new ones are dropped rather than waited for.
const QUEUE: usize = 4096;

/// How long [`finish`] waits at the end for the printer to write what is queued.
const DRAIN: Duration = Duration::from_secs(2);

enum Msg {
    Bytes(Vec<u8>),
    /// Answered once everything queued before it was written (or dropped).
    Barrier(Sender<()>),
}

static PRINTER: OnceLock<Sender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn printer() -> &'static Sender<Msg> {
    PRINTER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        // no thread (none can be started): the receiver is gone, every message is dropped
        let _ = std::thread::Builder::new()
            .name("ddcolor-stderr".into())
            .spawn(move || print_all(rx));
        tx
    })
}

fn print_all(rx: Receiver<Msg>) {
    let mut err = std::io::stderr();
    for msg in rx {
        match msg {
            Msg::Bytes(b) => {
                if err.write_all(&b).and_then(|()| err.flush()).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Msg::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Queue `bytes` for stderr; never blocks: a full queue drops them.
pub fn stderr_bytes(bytes: Vec<u8>) {
    if printer().try_send(Msg::Bytes(bytes)).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// One line for people on stderr (a newline is added), above the progress bar when one is
/// drawn: written plainly, it would land inside the bar's line.
pub fn line(s: &str) {
    let bar = crate::sync::lock(&ACTIVE_BAR)
        .as_ref()
        .and_then(|w| w.upgrade())
        .filter(|b| !b.is_hidden() && !b.is_finished());
    if let Some(bar) = bar {
        // the bar draws through this same queue (QueuedTerm)
        bar.println(s);
        return;
    }
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(b'\n');
    stderr_bytes(b);
}

/// The bar drawn last, while it lives ([`crate::progress::stderr_bar`] sets it).
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::WeakProgressBar>> =
    std::sync::Mutex::new(None);

/// Lines from [`line`] go above `bar` while it is drawn.
pub fn above(bar: &indicatif::ProgressBar) {
    *crate::sync::lock(&ACTIVE_BAR) = Some(bar.downgrade());
}

/// Messages that could not be written (stderr closed, full, or too slow).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Wait (at most two seconds) until what was queued for stderr is written or dropped; called
/// once before the process exits, so that a readable stderr loses nothing and a stalled one
/// cannot hold the exit.
pub fn finish() {
    let Some(tx) = PRINTER.get() else {
        return;
    };
    let deadline = Instant::now() + DRAIN;
    let (done, wait) = crossbeam_channel::bounded(1);
    if tx.send_deadline(Msg::Barrier(done), deadline).is_ok() {
        let _ = wait.recv_deadline(deadline);
    }
}

/// Write `bytes` to stdout, whole, and flush: an error (a reader that went away) is the
/// caller's to handle, never a panic.
pub fn stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// One line on stdout (a newline is added); see [`stdout_bytes`].
pub fn out_line(s: &str) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(b'\n');
    stdout_bytes(&b)
}

/// Make sure file descriptors 0, 1 and 2 are open (on `/dev/null` if they were closed), so
/// that a file this process opens never takes the number of a closed standard stream and
/// receives its messages.
pub fn guard_standard_fds() {
    #[cfg(unix)]
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let flags = if fd == 0 {
                libc::O_RDONLY
            } else {
                libc::O_WRONLY
            };
            // SAFETY: open(2) on a NUL-terminated constant path; the lowest free number is
            // `fd` itself, as the lower ones are open
            unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
        }
    }
}

/// A progress bar's terminal that writes through the stderr queue: a bar never blocks the
/// threads that update it, whatever stderr does.
#[derive(Debug)]
pub struct QueuedTerm;

impl QueuedTerm {
    fn put(&self, s: String) -> std::io::Result<()> {
        stderr_bytes(s.into_bytes());
        Ok(())
    }
}

impl indicatif::TermLike for QueuedTerm {
    fn width(&self) -> u16 {
        #[cfg(unix)]
        {
            // SAFETY: TIOCGWINSZ fills a winsize we own
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            if unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
                return ws.ws_col;
            }
        }
        80
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(format!("\x1b[{n}A"))
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(format!("\x1b[{n}B"))
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(format!("\x1b[{n}C"))
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(format!("\x1b[{n}D"))
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s.to_owned())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K".into())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `say!("...", args)`: one line for people on stderr, through the queue ([`line`]).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {
        $crate::say::line(&format!($($t)*))
    };
}
