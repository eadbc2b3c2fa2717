"""Human preference collection: a SQL-backed store, exports for the data layer and agreement reports.

    store = AnnotationStore("annotations.db")
    pid = store.add_prompt("Explain WAL mode.")
    store.add_candidates(pid, [{"text": "...", "policy": "sft", "sampling": {"temperature": 0.7}}, ...])
    store.create_tasks(kind="ranking", k=3, judgements_per_task=3)
    view = store.next_task("alice"); store.submit("alice", view.task_id, str(uuid4()), ranks=[1, 3, 2])

Command line: ``python -m alignment.annotations {export,stats,agreement,users} --help``.
"""

from alignment.annotations.store import AccessDenied, AnnotationStore, CandidateView, QueueSettings, TaskView

__all__ = ["AccessDenied", "AnnotationStore", "CandidateView", "QueueSettings", "TaskView"]
