"""Workers: the Celery app, thin tasks, the HTTP app wiring, the ``ecrm`` CLI, start-up."""

__all__: list[str] = []
