//! How far long work has come (verify, import, export, rebuild, fill): a
//! bar on stderr while stderr is a terminal, nothing otherwise. The work's
//! one summary line at the end is its caller's to print.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Log records.
    Events,
    /// Bytes of a file (an import, whose events are not counted ahead).
    Bytes,
}

/// A progress bar, hidden when stderr is not a terminal. Cloning it gives
/// another handle on the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("done", &self.bar.position())
            .field("total", &self.bar.length())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::hidden()
    }
}

impl Progress {
    /// A bar that draws nothing.
    pub fn hidden() -> Self {
        Self {
            bar: ProgressBar::hidden(),
        }
    }

    /// A bar for `what` ("verifying"), counting `unit` up to `total` (a
    /// spinner when the total is not known), drawn on stderr only when it
    /// is a terminal.
    pub fn on_terminal(what: &str, unit: Unit, total: Option<u64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let template = match (unit, total) {
            (Unit::Events, Some(_)) => {
                "{msg} [{bar:30}] {human_pos}/{human_len} events, {rate}, {eta} left"
            }
            (Unit::Events, None) => "{spinner} {msg} {human_pos} events, {rate}",
            (Unit::Bytes, Some(_)) => {
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, {eta} left"
            }
            (Unit::Bytes, None) => "{spinner} {msg} {binary_bytes}, {binary_bytes_per_sec}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            // indicatif's {per_sec} prints four decimals of events.
            .with_key(
                "rate",
                |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.0}/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Sets how much is done.
    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Adds to how much is done.
    pub fn add(&self, done: u64) {
        self.bar.inc(done);
    }

    /// Changes the words before the bar ("importing: 120000 events").
    pub fn say(&self, what: String) {
        self.bar.set_message(what);
    }

    /// Removes the bar, so the summary line stands alone.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A reader that moves a bar by the bytes taken from it, and counts the
/// lines (the records of an export) it has handed out.
pub struct CountingReader<R> {
    inner: R,
    progress: Progress,
    lines: u64,
}

impl<R: BufRead> CountingReader<R> {
    /// Reads `inner`, moving `progress`.
    pub fn new(inner: R, progress: Progress) -> Self {
        Self {
            inner,
            progress,
            lines: 0,
        }
    }
}

impl<R: BufRead> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Ok(taken) = self.inner.fill_buf() {
            let before = self.lines / 4096;
            self.lines += taken[..amount.min(taken.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            if self.lines / 4096 != before {
                self.progress
                    .say(format!("importing: {} events", self.lines));
            }
        }
        self.inner.consume(amount);
        self.progress.add(amount as u64);
    }
}

/// A writer that moves a bar by the lines (records) written through it.
pub struct CountingWriter<W> {
    inner: W,
    progress: Progress,
}

impl<W: Write> CountingWriter<W> {
    /// Writes to `inner`, moving `progress`.
    pub fn new(inner: W, progress: Progress) -> Self {
        Self { inner, progress }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if lines > 0 {
            self.progress.add(lines);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counting_adapters_count_lines_and_bytes_and_pass_data_through() {
        let progress = Progress::hidden();
        let mut reader = CountingReader::new(&b"a\nbb\nccc\n"[..], progress.clone());
        let mut text = String::new();
        reader.read_to_string(&mut text).expect("reads");
        assert_eq!((text.as_str(), reader.lines), ("a\nbb\nccc\n", 3));
        assert_eq!(progress.bar.position(), 9, "bytes taken");

        let progress = Progress::hidden();
        let mut out = Vec::new();
        let mut writer = CountingWriter::new(&mut out, progress.clone());
        writer.write_all(b"{}\n{}\n").expect("writes");
        writer.write_all(b"{}\n").expect("writes");
        drop(writer);
        assert_eq!((out.len(), progress.bar.position()), (9, 3));
    }
}
