//! Keys: views (1-5, d), sort (s, S), focus (Tab), filter (/), pause (p), quit (q, Ctrl-C).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{
    app::{App, Focus},
    views::VIEWS,
};
use crate::run::Action;

pub fn handle(app: &mut App, key: KeyEvent) -> Action {
    // Raw mode turns Ctrl-C into a key: it quits, whatever else is going on.
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if app.editing {
        match key.code {
            KeyCode::Enter => app.editing = false,
            KeyCode::Esc => {
                app.filter.clear();
                app.editing = false;
            }
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(c) => app.filter.push(c),
            _ => {}
        }
        return Action::Continue;
    }
    match key.code {
        KeyCode::Char('q') => return Action::Quit,
        KeyCode::Char('/') => app.editing = true,
        KeyCode::Esc => app.filter.clear(),
        KeyCode::Char('p') | KeyCode::Char(' ') => app.toggle_pause(),
        KeyCode::Tab | KeyCode::BackTab if !app.view().process_columns.is_empty() => {
            app.focus = match app.focus {
                Focus::Processes => Focus::Detail,
                Focus::Detail => Focus::Processes,
            };
        }
        KeyCode::Char('s') => cycle_sort(app, 1),
        KeyCode::Char('S') => cycle_sort(app, -1),
        KeyCode::Char(c) => {
            if let Some(i) = VIEWS.iter().position(|v| v.key == c) {
                app.view = i;
                if VIEWS[i].process_columns.is_empty() {
                    app.focus = Focus::Detail;
                }
            }
        }
        _ => {}
    }
    Action::Continue
}

/// The next (or previous) column of the focused table.
fn cycle_sort(app: &mut App, step: isize) {
    let view = app.view();
    // The process table sorts by its numeric columns; the detail table by all (its key too).
    let n = match app.focus {
        Focus::Processes => view.process_columns.len(),
        Focus::Detail => view.detail_columns.len(),
    };
    if n == 0 {
        return;
    }
    let at = app.sort_of(app.focus) as isize;
    let next = (at + step).rem_euclid(n as isize) as usize;
    app.sort.insert((app.view, app.focus), next);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossterm::event::KeyEvent;

    use super::*;
    use crate::top::app::Header;

    fn app() -> App {
        App::new(
            Header {
                targets: "x".into(),
                interval: Duration::from_secs(1),
                output: None,
            },
            vec!["syscalls"],
        )
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn keys_switch_views_sort_filter_pause_and_quit() {
        let mut a = app();
        assert_eq!(handle(&mut a, key('3')), Action::Continue);
        assert_eq!(a.view().name, "SQL");
        handle(&mut a, key('d'));
        assert_eq!(a.view().name, "drops");
        handle(&mut a, key('1'));
        // The syscalls' detail sorts by calls (column 3) until `s`.
        handle(&mut a, key('s'));
        assert_eq!(a.sort_of(Focus::Detail), 4);
        handle(&mut a, key('S'));
        handle(&mut a, key('S'));
        assert_eq!(a.sort_of(Focus::Detail), 2);
        handle(&mut a, key('/'));
        for c in "nova q".chars() {
            // 'q' is text while typing a filter, not quit.
            assert_eq!(handle(&mut a, key(c)), Action::Continue);
        }
        handle(&mut a, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(a.filter, "nova q");
        handle(&mut a, key('p'));
        assert!(a.paused());
        handle(&mut a, key('p'));
        assert!(!a.paused());
        assert_eq!(handle(&mut a, key('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        handle(&mut a, key('/'));
        assert_eq!(handle(&mut a, ctrl_c), Action::Quit);
    }
}
