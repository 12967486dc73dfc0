"""Forgetting a user (issue 14, part 3): the forget list, the per-store erasers and the audit log.

`mmrec forget` and `DELETE /users/{id}` call `mmrec.privacy.forget.forget_user`; ingest applies
the forget list (`mmrec.privacy.forget_list`) so a later pipeline run never brings a user back.
"""
