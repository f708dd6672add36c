"""Acting on duplicate groups: plans, and journaled, undoable moves, trash and links; remembered decisions.

Nothing here decides what is a duplicate (that is :mod:`lookalike.dupes`): a plan takes the
members whose role is ``act`` and does one thing to each.

Every action is written to a journal in the collection folder, ``<db>/journal/RUN_ID.jsonl``
(one fsync'd JSON line per event), *before* it is done. Each action is one rename or link
away from its undo, and :func:`undo` looks at the files themselves, so a run killed at any
moment is restored by ``undo``: moves, trash and links come back byte-identical; deletes are
final (the plan says so).

Original files replaced by a link go to the trash first (that is what undo restores), so for
links, as for ``trash``, the space comes free when the trash is emptied.

Modules, in the order a run uses them:

- :mod:`.planning`: :func:`make_plan` (what a run would do, the dry run; no file touched)
- :mod:`.applying`: :func:`apply_plan` (re-check, journal, act; the collection follows)
- :mod:`.undoing`: :func:`undo` (from the journal and the files on disk)
- :mod:`.journal`: the write-ahead journal, run ids, :func:`runs`, the run lock
- :mod:`.files`: re-checks against the index (size, modified time, hash), a move that never overwrites
- :mod:`.trash`: the freedesktop.org trash (trash and link actions)
- :mod:`.decisions`: "not duplicates" decisions, groups chosen on the page
"""

from .applying import RunResult, apply_plan
from .decisions import DECISIONS_FILE, chosen_groups, load_decisions, remember_not_duplicates
from .errors import ActionError
from .journal import JOURNAL_DIR, journal_dir, new_run_id, runs
from .planning import ACTIONS, Plan, Step, make_plan, move_target
from .undoing import undo

__all__ = [
    "ACTIONS", "DECISIONS_FILE", "JOURNAL_DIR", "ActionError", "Plan", "RunResult", "Step", "apply_plan",
    "chosen_groups", "journal_dir", "load_decisions", "make_plan", "move_target", "new_run_id",
    "remember_not_duplicates", "runs", "undo",
]
