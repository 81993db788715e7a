"""A query answer of _queue's facts query, as the database returns it, for unit tests of the shaping and the policy."""


def raw(**over):
    base = {"by_status": {"pending": 3, "queued": 1, "started": 2, "finished": 100, "failed": 5},
            "oldest_pending_age_s": 42.0, "useful_backlog": 2, "eligible_projects": 2, "oldest_eligible_age_s": 5.0,
            "busy_projects": 3, "locked_projects_waiting": 0, "stuck_stale": 0, "stuck_orphaned_queued": 0,
            "stuck_old_pending": 0, "last_hour_finished": 19, "last_hour_failed": 1, "duration_count": 20,
            "duration_avg_s": 10.04, "duration_p50_s": 9.0, "duration_p95_s": 30.0}
    base.update(over)
    return base
