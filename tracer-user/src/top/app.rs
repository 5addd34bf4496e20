//! top's state: what was collected, what is shown (view, sort, filter, pause), and the
//! [`Frontend`] the session drives — every interval folds in and redraws; every key is handled
//! and redraws.

use std::{collections::HashMap, time::Duration};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt as _;

use super::{
    input,
    model::{Model, ProcId},
    render,
    terminal::Tui,
    usage::SelfUsage,
    views::{VIEWS, View},
};
use crate::run::{Action, Collected, Frontend};

/// Which table `s` sorts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Focus {
    Processes,
    Detail,
}

/// What the header says about the session.
pub struct Header {
    /// The `--pid` specs.
    pub targets: String,
    pub interval: Duration,
    /// `--output`, if any.
    pub output: Option<String>,
}

pub struct App {
    pub live: Model,
    /// The model shown while paused.
    pub frozen: Option<Model>,
    /// Index in [`VIEWS`].
    pub view: usize,
    pub focus: Focus,
    /// Sort column per view and table (index in the table's columns).
    pub sort: HashMap<(usize, Focus), usize>,
    /// Processes shown: those whose name, service or PID contains it (case-insensitive).
    pub filter: String,
    /// The filter is being typed.
    pub editing: bool,
    pub usage: SelfUsage,
    pub header: Header,
    /// Tables the enabled tracers write.
    pub tables: Vec<&'static str>,
}

impl App {
    pub fn new(header: Header, tables: Vec<&'static str>) -> App {
        App {
            live: Model::default(),
            frozen: None,
            view: 0,
            focus: Focus::Detail,
            sort: HashMap::new(),
            filter: String::new(),
            editing: false,
            usage: SelfUsage::new(),
            header,
            tables,
        }
    }

    /// The model on screen.
    pub fn shown(&self) -> &Model {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    pub fn view(&self) -> &'static View {
        VIEWS[self.view]
    }

    /// The sort column of a table of the current view.
    pub fn sort_of(&self, focus: Focus) -> usize {
        let view = self.view();
        self.sort
            .get(&(self.view, focus))
            .copied()
            .unwrap_or(match focus {
                Focus::Processes => view.process_sort,
                Focus::Detail => view.detail_sort,
            })
    }

    /// Whether the filter shows this process.
    pub fn keeps(&self, id: &ProcId) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        let Some(p) = self.shown().procs.get(id) else {
            return false;
        };
        p.name.to_lowercase().contains(&needle)
            || p.service.to_lowercase().contains(&needle)
            || id.pid.to_string().contains(&needle)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn toggle_pause(&mut self) {
        self.frozen = match self.frozen {
            Some(_) => None,
            None => Some(self.live.clone()),
        };
    }
}

/// The frontend: the app and its terminal (None once the session is over).
pub struct Top {
    pub app: App,
    tui: Option<Tui>,
    events: EventStream,
}

impl Top {
    pub fn new(app: App, tui: Tui) -> Top {
        let mut top = Top {
            app,
            tui: Some(tui),
            events: EventStream::new(),
        };
        top.draw();
        top
    }

    fn draw(&mut self) {
        if let Some(tui) = &mut self.tui {
            // A failed draw (the terminal went away) shows on the next one, or at exit.
            if let Err(e) = tui.terminal.draw(|f| render::draw(f, &self.app)) {
                tracing::warn!("cannot draw: {e}");
            }
        }
    }
}

impl Frontend for Top {
    async fn input(&mut self) -> Action {
        loop {
            match self.events.next().await {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    let action = input::handle(&mut self.app, key);
                    if action == Action::Continue {
                        self.draw();
                    }
                    return action;
                }
                Some(Ok(Event::Resize(..))) => {
                    self.draw();
                    return Action::Continue;
                }
                Some(Ok(_)) => {}
                // The terminal is gone: nothing to show on, nobody to quit.
                Some(Err(_)) | None => return Action::Quit,
            }
        }
    }

    fn interval(&mut self, collected: &Collected<'_>) {
        self.app.live.ingest(collected);
        self.app.usage.sample();
        self.draw();
    }

    fn end(&mut self) {
        // Dropping the guard restores the terminal.
        self.tui = None;
    }
}
