//! The client's two ends at the user: where lines come from and where
//! events go, for both modes.
//!
//! Interactive mode runs rustyline on its own thread. The session asks it
//! for one line at a time ([`Console::request_line`], carrying the prompt
//! to show), and incoming events are handed to rustyline's external
//! printer on a printer thread, which prints them above the prompt and
//! redraws the half-typed line. (The printer can block while rustyline is
//! busy, which must not stall the async task that owns the socket, hence
//! its own thread behind a bounded queue.) Scriptable mode reads stdin
//! line by line on a thread and prints events to stdout, one per line.

use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::client::ui::complete::{ChatHelper, KnownNames};

/// The line editor: rustyline with tab completion of commands and names.
type Editor = rustyline::Editor<ChatHelper, rustyline::history::DefaultHistory>;

/// How long, when exiting while a line is being edited, to wait for
/// rustyline to give the terminal back before restoring it by hand.
/// Only bounds a corner case; a normal exit never waits for it.
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// What a requested line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A user name at login: not kept in the history.
    Name,
    /// A chat line or command.
    Chat,
    /// A password: read without echo, never kept in the history.
    Secret,
}

/// A request to read one line.
#[derive(Debug)]
struct LineRequest {
    /// Shown before the line (interactive mode only).
    prompt: String,
    /// What the line is for.
    kind: LineKind,
}

/// What the input side produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    /// A line, without its line ending.
    Line(String),
    /// A line longer than the limit; it was skipped.
    TooLong(usize),
    /// End of input (Ctrl-D, or stdin ended).
    Eof,
    /// Ctrl-C.
    Interrupted,
    /// Something worth telling the user that is not fatal.
    Warning(String),
    /// Reading input failed for good.
    Failed(String),
}

/// A line for the printer thread, or a request to confirm it has passed
/// everything before on.
enum PrintJob {
    /// Print this (one event).
    Line(String),
    /// Answer once every earlier line was handed to rustyline.
    Flush(oneshot::Sender<()>),
    /// Make rustyline return from `readline` after showing every earlier
    /// line, then answer.
    Release(oneshot::Sender<()>),
}

/// Where output goes.
enum Output {
    /// Straight to stdout, one line per event.
    Stdout,
    /// To the printer thread, which prints above the prompt.
    Printer(mpsc::Sender<PrintJob>),
}

/// The input and output ends of the client.
pub struct Console {
    /// Asks the input thread for the next line.
    requests: std_mpsc::Sender<LineRequest>,
    /// Lines (and end of input) from the input thread.
    lines: mpsc::Receiver<InputEvent>,
    /// Where events are printed.
    output: Output,
    /// Keeps SIGINT from killing the process outside `readline` (where
    /// rustyline handles it), since [`Console::finish`] raises it.
    #[cfg(unix)]
    _sigint: Option<tokio::signal::unix::Signal>,
    /// The terminal's settings before rustyline changed them (interactive only).
    #[cfg(unix)]
    saved_termios: Option<nix::sys::termios::Termios>,
    /// The names tab completes to (learnt by the session).
    names: KnownNames,
}

impl Console {
    /// Scriptable mode: lines from stdin (at most `max_line_bytes` each),
    /// events to stdout.
    pub fn scriptable(max_line_bytes: usize) -> Console {
        let (requests, request_rx) = std_mpsc::channel::<LineRequest>();
        let (line_tx, lines) = mpsc::channel(1);
        thread::spawn(move || read_stdin(request_rx, line_tx, max_line_bytes));
        Console {
            requests,
            lines,
            output: Output::Stdout,
            #[cfg(unix)]
            _sigint: None,
            #[cfg(unix)]
            saved_termios: None,
            names: KnownNames::default(),
        }
    }

    /// Interactive mode: rustyline on the terminal, with history in
    /// `history` (if any) limited to `history_size` lines, and at most
    /// `print_queue` events waiting to be printed.
    pub fn interactive(
        history: Option<PathBuf>,
        history_size: usize,
        print_queue: usize,
    ) -> Result<Console, String> {
        #[cfg(unix)]
        let saved_termios = nix::sys::termios::tcgetattr(io::stdin()).ok();
        let (requests, request_rx) = std_mpsc::channel::<LineRequest>();
        let (line_tx, lines) = mpsc::channel(1);
        #[cfg(unix)]
        let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let names = KnownNames::default();
        let helper = ChatHelper {
            names: names.clone(),
        };
        thread::Builder::new()
            .name("readline".into())
            .spawn(move || edit_lines(request_rx, line_tx, history, history_size, ready_tx, helper))
            .map_err(|e| format!("cannot start the input thread: {e}"))?;
        let printer = ready_rx
            .recv()
            .map_err(|_| "the input thread ended early".to_owned())??;
        let (print_tx, print_rx) = mpsc::channel(print_queue.max(1));
        thread::Builder::new()
            .name("printer".into())
            .spawn(move || print_lines(printer, print_rx))
            .map_err(|e| format!("cannot start the printer thread: {e}"))?;
        Ok(Console {
            requests,
            lines,
            output: Output::Printer(print_tx),
            #[cfg(unix)]
            _sigint: sigint,
            #[cfg(unix)]
            saved_termios,
            names,
        })
    }

    /// The names tab completes to: the session adds what it learns.
    pub fn names(&self) -> &KnownNames {
        &self.names
    }

    /// Whether this console is interactive.
    pub fn is_interactive(&self) -> bool {
        matches!(self.output, Output::Printer(_))
    }

    /// Asks for the next line, shown after `prompt`. The answer arrives
    /// through [`Self::next_input`].
    pub fn request_line(&self, prompt: String, kind: LineKind) {
        // If the input thread is gone, next_input reports it.
        let _ = self.requests.send(LineRequest { prompt, kind });
    }

    /// The next input event; `None` if the input thread ended.
    pub async fn next_input(&mut self) -> Option<InputEvent> {
        self.lines.recv().await
    }

    /// Prints one event line.
    pub async fn print(&self, line: String) {
        match &self.output {
            Output::Stdout => {
                // A closed stdout (e.g. `| head`) must not stop the chat.
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Output::Printer(tx) => {
                let _ = tx.send(PrintJob::Line(line)).await;
            }
        }
    }

    /// Ends output and prints `last` (the reason for leaving) to stderr.
    /// `reading` says a line was requested and not yet answered, so
    /// rustyline is still editing and holds the terminal in raw mode: it is
    /// made to return first, so it puts the terminal back itself.
    pub async fn finish(mut self, reading: bool, last: Option<String>) {
        if let Output::Printer(tx) = &self.output {
            if reading {
                let (done, released) = oneshot::channel();
                if tx.send(PrintJob::Release(done)).await.is_ok() {
                    let _ = released.await;
                }
                let returned = tokio::time::timeout(RELEASE_WAIT, async {
                    while let Some(event) = self.lines.recv().await {
                        if matches!(
                            event,
                            InputEvent::Interrupted
                                | InputEvent::Eof
                                | InputEvent::Line(_)
                                | InputEvent::Failed(_)
                        ) {
                            return;
                        }
                    }
                })
                .await;
                if returned.is_err() {
                    self.restore_terminal();
                }
            } else {
                flush(tx).await;
            }
        }
        if let Some(last) = last {
            eprintln!("{last}");
        }
    }

    /// Undoes rustyline's raw mode from outside: readline cannot be
    /// interrupted from another thread, and the process is about to exit
    /// while it waits for a key.
    fn restore_terminal(&self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved_termios {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
        // Bracketed paste off (rustyline turned it on), then leave the
        // half-typed line visible and start a fresh one.
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?2004l\n");
        let _ = out.flush();
    }
}

/// Waits until the printer thread has handed on every earlier line.
async fn flush(tx: &mpsc::Sender<PrintJob>) {
    let (done, confirmed) = oneshot::channel();
    if tx.send(PrintJob::Flush(done)).await.is_ok() {
        let _ = confirmed.await;
    }
}

/// The interactive input thread: reads one line per request with rustyline.
fn edit_lines(
    requests: std_mpsc::Receiver<LineRequest>,
    lines: mpsc::Sender<InputEvent>,
    history: Option<PathBuf>,
    history_size: usize,
    ready: std_mpsc::Sender<Result<Box<dyn rustyline::ExternalPrinter + Send>, String>>,
    helper: ChatHelper,
) {
    use rustyline::error::ReadlineError;

    let config = match rustyline::Config::builder()
        .max_history_size(history_size)
        .and_then(|b| b.history_ignore_dups(true))
    {
        Ok(b) => b.history_ignore_space(true).auto_add_history(false).build(),
        Err(e) => {
            let _ = ready.send(Err(format!("bad history settings: {e}")));
            return;
        }
    };
    let mut editor = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot set up the terminal: {e}")));
            return;
        }
    };
    editor.set_helper(Some(helper));
    match editor.create_external_printer() {
        Ok(p) => {
            let _ = ready.send(Ok(Box::new(p)));
        }
        Err(e) => {
            let _ = ready.send(Err(format!("cannot set up the terminal: {e}")));
            return;
        }
    }
    let mut history = history.map(|path| History::open(path, &mut editor));
    if let Some(warning) = history.as_mut().and_then(|h| h.warning.take()) {
        let _ = lines.blocking_send(InputEvent::Warning(warning));
    }
    while let Ok(request) = requests.recv() {
        if request.kind == LineKind::Secret {
            let event = match rpassword::prompt_password(&request.prompt) {
                Ok(line) => InputEvent::Line(line),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => InputEvent::Eof,
                Err(e) => InputEvent::Failed(format!("reading the password failed: {e}")),
            };
            let failed = matches!(event, InputEvent::Failed(_));
            if lines.blocking_send(event).is_err() || failed {
                return;
            }
            continue;
        }
        let event = loop {
            match editor.readline(&request.prompt) {
                Ok(line) => {
                    if request.kind == LineKind::Chat && !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(warning) = history.as_mut().and_then(|h| h.append(&mut editor))
                        {
                            let _ = lines.blocking_send(InputEvent::Warning(warning));
                        }
                    }
                    break InputEvent::Line(line);
                }
                Err(ReadlineError::Eof) => break InputEvent::Eof,
                Err(ReadlineError::Interrupted) => break InputEvent::Interrupted,
                // A window resize interrupting the read: just read on.
                Err(ReadlineError::Signal(_)) => continue,
                Err(e) => break InputEvent::Failed(format!("reading the terminal failed: {e}")),
            }
        };
        let failed = matches!(event, InputEvent::Failed(_));
        if lines.blocking_send(event).is_err() || failed {
            return;
        }
    }
}

/// The history file and whether writing it has failed before.
struct History {
    /// Where it lives.
    path: PathBuf,
    /// Set once writing failed; the user is told once, not on every line.
    broken: bool,
    /// A problem found when opening, for the user.
    warning: Option<String>,
}

impl History {
    /// Creates the directory and loads earlier history; problems are noted,
    /// never fatal.
    fn open(path: PathBuf, editor: &mut Editor) -> History {
        let mut warning = None;
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                warning = Some(format!("history will not be kept ({}): {e}", dir.display()));
            }
        }
        if path.exists() {
            if let Err(e) = editor.load_history(&path) {
                warning = Some(format!("could not read history {}: {e}", path.display()));
            }
        }
        History {
            broken: false,
            path,
            warning,
        }
    }

    /// Appends the new entries to the file; returns a warning the first
    /// time that fails.
    fn append(&mut self, editor: &mut Editor) -> Option<String> {
        match editor.append_history(&self.path) {
            Ok(()) => None,
            Err(e) if !self.broken => {
                self.broken = true;
                Some(format!("history not saved to {}: {e}", self.path.display()))
            }
            Err(_) => None,
        }
    }
}

/// The printer thread: hands each line to rustyline's external printer.
fn print_lines(
    mut printer: Box<dyn rustyline::ExternalPrinter + Send>,
    mut jobs: mpsc::Receiver<PrintJob>,
) {
    while let Some(job) = jobs.blocking_recv() {
        match job {
            PrintJob::Line(mut line) => {
                line.push('\n');
                if printer.print(line.clone()).is_err() {
                    // The terminal side is gone; print plainly rather than lose it.
                    let _ = io::stdout().write_all(line.as_bytes());
                }
            }
            PrintJob::Flush(done) => {
                let _ = done.send(());
            }
            PrintJob::Release(done) => {
                // `print` returns once the line before was taken (and so
                // shown: rustyline shows a line before it looks for the
                // next event). This empty line itself is meant never to be
                // shown: the interrupt raised next is seen first, because
                // rustyline checks for signals before printing requests.
                let _ = printer.print(String::new());
                #[cfg(unix)]
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT);
                let _ = done.send(());
            }
        }
    }
}

/// The scriptable input thread: reads one stdin line per request.
fn read_stdin(
    requests: std_mpsc::Receiver<LineRequest>,
    lines: mpsc::Sender<InputEvent>,
    max_line_bytes: usize,
) {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    while requests.recv().is_ok() {
        let event = match read_line(&mut stdin, &mut buf, max_line_bytes) {
            Ok(Line::Eof) => InputEvent::Eof,
            Ok(Line::TooLong(n)) => InputEvent::TooLong(n),
            Ok(Line::Text(text)) => InputEvent::Line(text),
            Err(e) => InputEvent::Failed(format!("reading stdin failed: {e}")),
        };
        let end = matches!(event, InputEvent::Eof | InputEvent::Failed(_));
        if lines.blocking_send(event).is_err() || end {
            return;
        }
    }
}

/// One line read from a stream.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The line, without `\n` or `\r\n`; invalid UTF-8 replaced.
    Text(String),
    /// The line was over the limit (its length so far); it was skipped.
    TooLong(usize),
    /// The stream ended.
    Eof,
}

/// Reads one line of at most `max` bytes; a longer one is consumed and
/// reported instead of being buffered whole.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = input.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        // Skip the rest of the line without keeping it.
        let mut skipped = buf.len();
        if n == buf.len() {
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = input
                    .by_ref()
                    .take(64 * 1024)
                    .read_until(b'\n', &mut sink)?;
                skipped += m;
                if m == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
        }
        return Ok(Line::TooLong(skipped));
    }
    Ok(Line::Text(String::from_utf8_lossy(buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = io::BufReader::with_capacity(7, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut buf, max).unwrap();
            let end = line == Line::Eof;
            out.push(line);
            if end {
                return out;
            }
        }
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[test]
    fn lines_lose_their_endings() {
        assert_eq!(
            lines(b"one\ntwo\r\n\nlast", 100),
            vec![text("one"), text("two"), text(""), text("last"), Line::Eof]
        );
        assert_eq!(lines(b"", 100), vec![Line::Eof]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(lines(b"a\xffb\n", 100), vec![text("a\u{fffd}b"), Line::Eof]);
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat(b'x').take(200_000));
        input.extend(b"\nafter\n");
        let got = lines(&input, 10);
        assert_eq!(got[0], text("short"));
        assert!(matches!(got[1], Line::TooLong(n) if n > 10), "{:?}", got[1]);
        assert_eq!(got[2..], [text("after"), Line::Eof]);
        // Exactly at the limit is fine, one over is not.
        assert_eq!(lines(b"0123456789\n", 10)[0], text("0123456789"));
        assert!(matches!(lines(b"0123456789a\n", 10)[0], Line::TooLong(_)));
    }
}
