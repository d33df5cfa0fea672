//! The progress of a sweep on the terminal: a bar over every fit when stderr is a terminal,
//! one line per finished run, nothing with `--json`.

/// Reports progress lines: a bar on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} fits  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Some(b)
        } else {
            None
        };
        Progress { bar, quiet }
    }
    pub fn tick(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(msg.to_string());
        }
    }
    pub fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None if !self.quiet => eprintln!("{msg}"),
            None => {}
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
