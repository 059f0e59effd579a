//! The evidence panel's list of SPECs: its order (most urgent first by default), the
//! selected SPEC and the scroll position, kept apart from drawing so the rules are plain.
//!
//! The selection follows the SPEC, not the row: a new measurement that reorders the list
//! keeps the same SPEC selected.

use speckit_retention::limits::Verdict;
use speckit_retention::stats::SpecStats;

/// How the SPECs are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Blocked, then warned, then fine; larger first within each.
    State,
    /// Larger first.
    Size,
    /// By SPEC-ID.
    Name,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::State => Self::Size,
            Self::Size => Self::Name,
            Self::Name => Self::State,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Size => "size",
            Self::Name => "name",
        }
    }
}

/// The list's order, selection and scroll position.
#[derive(Debug, Clone)]
pub struct SpecList {
    pub sort: SortBy,
    /// The selected SPEC's ID (kept across measurements).
    selected: Option<String>,
    /// The first row shown.
    offset: usize,
}

impl Default for SpecList {
    fn default() -> Self {
        Self {
            sort: SortBy::State,
            selected: None,
            offset: 0,
        }
    }
}

/// A move of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
}

fn urgency(verdict: &Verdict) -> u8 {
    match verdict.as_str() {
        "block" => 0,
        "warn" => 1,
        _ => 2,
    }
}

impl SpecList {
    /// `specs` in the list's order.
    pub fn ordered<'a>(&self, specs: &'a [SpecStats]) -> Vec<&'a SpecStats> {
        let mut ordered: Vec<&SpecStats> = specs.iter().collect();
        match self.sort {
            SortBy::State => ordered.sort_by(|a, b| {
                (
                    urgency(&a.verdict),
                    std::cmp::Reverse(a.total.bytes),
                    &a.spec,
                )
                    .cmp(&(
                        urgency(&b.verdict),
                        std::cmp::Reverse(b.total.bytes),
                        &b.spec,
                    ))
            }),
            SortBy::Size => ordered.sort_by(|a, b| {
                (std::cmp::Reverse(a.total.bytes), &a.spec)
                    .cmp(&(std::cmp::Reverse(b.total.bytes), &b.spec))
            }),
            SortBy::Name => ordered.sort_by(|a, b| a.spec.cmp(&b.spec)),
        }
        ordered
    }

    /// The selected row in `ordered` (the first when none is selected or it is gone).
    pub fn selected_index(&self, ordered: &[&SpecStats]) -> usize {
        self.selected
            .as_ref()
            .and_then(|id| ordered.iter().position(|s| &s.spec == id))
            .unwrap_or(0)
    }

    pub fn selected<'a>(&self, ordered: &[&'a SpecStats]) -> Option<&'a SpecStats> {
        ordered.get(self.selected_index(ordered)).copied()
    }

    /// Moves the selection by `step` over `ordered`, `page` rows being one page.
    pub fn move_selection(&mut self, ordered: &[&SpecStats], step: Move, page: usize) {
        if ordered.is_empty() {
            return;
        }
        let last = ordered.len() - 1;
        let at = self.selected_index(ordered);
        let page = page.max(1);
        let to = match step {
            Move::Up => at.saturating_sub(1),
            Move::Down => (at + 1).min(last),
            Move::PageUp => at.saturating_sub(page),
            Move::PageDown => (at + page).min(last),
            Move::First => 0,
            Move::Last => last,
        };
        self.selected = Some(ordered[to].spec.clone());
    }

    pub fn cycle_sort(&mut self) {
        self.sort = self.sort.next();
    }

    /// The rows to draw in `height` rows, scrolled so the selection is in view: the range
    /// of `ordered` shown.
    pub fn window(&mut self, ordered: &[&SpecStats], height: usize) -> std::ops::Range<usize> {
        let height = height.max(1);
        let selected = self.selected_index(ordered);
        if selected < self.offset {
            self.offset = selected;
        } else if selected >= self.offset + height {
            self.offset = selected + 1 - height;
        }
        // Never scrolled past the end (the list may have shrunk).
        self.offset = self.offset.min(ordered.len().saturating_sub(height));
        self.offset..(self.offset + height).min(ordered.len())
    }
}
