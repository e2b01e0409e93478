"""Built-in task cards (YAML). Installed as the package ``hftl.task_cards``; see ``hftl.tasks``."""
