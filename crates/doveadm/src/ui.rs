//! Where output goes: stdout is buffered and written once at the end (so
//! the table formatter can size its columns), stderr lines are written at
//! once with doveadm's `Info:`/`Warning:`/`Error:`/`Fatal:` prefixes.

use std::io::Write;

/// Output sinks plus the sticky exit code of the running command.
#[derive(Debug, Default)]
pub struct Ui {
    /// Bytes destined for stdout.
    pub out: Vec<u8>,
    /// `-v`: print `Info:` lines.
    pub verbose: bool,
    /// When set, stderr is captured here instead of written (tests).
    captured_err: Option<Vec<u8>>,
    exit_code: i32,
    /// The command ended through a `Fatal:` or its usage text: doveadm
    /// exits right there, without finishing its formatter.
    pub aborted: bool,
    /// The command's results went through a formatter.
    pub rendered: bool,
}

impl Ui {
    /// Output to the real stdout/stderr.
    pub fn new() -> Self {
        Self::default()
    }

    /// Output captured in memory (for tests): see [`Ui::captured_stderr`].
    pub fn capturing() -> Self {
        Self {
            captured_err: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// What was written to stderr when capturing.
    pub fn captured_stderr(&self) -> &[u8] {
        self.captured_err.as_deref().unwrap_or_default()
    }

    /// The exit code set so far.
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Sets the exit code unconditionally (doveadm's `doveadm_exit_code = X`).
    pub fn set_exit(&mut self, code: i32) {
        self.exit_code = code;
    }

    /// Sets the exit code only if no error was recorded yet.
    pub fn set_exit_if_ok(&mut self, code: i32) {
        if self.exit_code == 0 {
            self.exit_code = code;
        }
    }

    /// Writes raw bytes to stderr.
    pub fn stderr(&mut self, bytes: &[u8]) {
        match &mut self.captured_err {
            Some(buf) => buf.extend_from_slice(bytes),
            None => {
                let mut e = std::io::stderr().lock();
                // stderr failures cannot be reported anywhere else.
                let _ = e.write_all(bytes);
                let _ = e.flush();
            }
        }
    }

    fn prefixed(&mut self, prefix: &str, msg: &[u8]) {
        let mut line = Vec::with_capacity(prefix.len() + msg.len() + 1);
        line.extend_from_slice(prefix.as_bytes());
        line.extend_from_slice(msg);
        line.push(b'\n');
        self.stderr(&line);
    }

    /// `Info: msg`, only with `-v`.
    pub fn info(&mut self, msg: impl AsRef<[u8]>) {
        if self.verbose {
            self.prefixed("Info: ", msg.as_ref());
        }
    }

    /// `Warning: msg`.
    pub fn warning(&mut self, msg: impl AsRef<[u8]>) {
        self.prefixed("Warning: ", msg.as_ref());
    }

    /// `Error: msg`.
    pub fn error(&mut self, msg: impl AsRef<[u8]>) {
        self.prefixed("Error: ", msg.as_ref());
    }

    /// `Fatal: msg` and the exit code to end with.
    pub fn fatal(&mut self, msg: impl AsRef<[u8]>, code: i32) -> i32 {
        self.prefixed("Fatal: ", msg.as_ref());
        self.exit_code = code;
        self.aborted = true;
        code
    }

    /// A line printed as is (usage texts).
    pub fn raw_line(&mut self, msg: impl AsRef<[u8]>) {
        let mut line = msg.as_ref().to_vec();
        line.push(b'\n');
        self.stderr(&line);
    }

    /// Writes the buffered stdout. Called once at exit.
    pub fn finish(&mut self) {
        if self.captured_err.is_some() || self.out.is_empty() {
            return;
        }
        let mut o = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) is not an error worth reporting.
        let _ = o.write_all(&self.out);
        let _ = o.flush();
        self.out.clear();
    }
}
