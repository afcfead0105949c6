"""Tasks: a user's to-do items. `service.py` is the only place task rules live."""
