"""Human preference collection: a SQL-backed store, exports for the data layer and agreement reports.

    store = AnnotationStore("annotations.db")
    store.import_tasks(rows, task_set="helpfulness", kind="ranking", source="tasks.jsonl")
    # or: pid = store.add_prompt("Explain WAL mode."); store.add_candidates(pid, [{"text": "...", ...}, ...])
    #     store.create_tasks(kind="ranking", k=3, judgements_per_task=3)
    view = store.next_task("alice"); store.submit("alice", view.task_id, str(uuid4()), ranks=[1, 3, 2])

Command line: ``python -m annotation_ui --help`` (``python -m alignment.annotations`` is an alias).
"""

from alignment.annotations.store import (
    AccessDenied,
    AnnotationStore,
    CandidateView,
    LoginResult,
    QueueSettings,
    TaskView,
)

__all__ = ["AccessDenied", "AnnotationStore", "CandidateView", "LoginResult", "QueueSettings", "TaskView"]
