//! The terminal while top runs: raw mode and the alternate screen, given back on every way out —
//! the guard's drop, and a panic hook for a panic (bpftop's terminal guard).

use std::{
    io::{self, IsTerminal as _, Stdout},
    sync::Once,
};

use crossterm::{
    cursor, execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use super::logs;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(
        "top needs a terminal: standard output is not a TTY (use `scalp-bpf run` to record to files)"
    )]
    NotATty,
    #[error("top cannot use the terminal: {0}")]
    Setup(#[source] io::Error),
}

/// Fails unless standard output is a terminal (checked before anything is loaded).
pub fn check() -> Result<(), TerminalError> {
    if io::stdout().is_terminal() {
        Ok(())
    } else {
        Err(TerminalError::NotATty)
    }
}

pub type Backend = CrosstermBackend<Stdout>;

/// The terminal, in raw mode on the alternate screen until dropped.
pub struct Tui {
    pub terminal: Terminal<Backend>,
}

impl Tui {
    pub fn enter() -> Result<Tui, TerminalError> {
        install_panic_hook();
        terminal::enable_raw_mode().map_err(TerminalError::Setup)?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(TerminalError::Setup(e));
        }
        logs::hold();
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(Tui { terminal }),
            Err(e) => {
                restore();
                Err(TerminalError::Setup(e))
            }
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode (idempotent), then prints the held log.
pub fn restore() {
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    logs::release();
}

/// A panic restores the terminal before its message is printed.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
