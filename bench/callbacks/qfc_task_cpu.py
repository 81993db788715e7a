"""Benchmark-only callback: the controller CPU spent on each task of a run, written as JSON for bench_fleet.py.

Enabled by bench/bench_fleet.py for its 10-server runs only (ANSIBLE_CALLBACK_PLUGINS, ANSIBLE_CALLBACKS_ENABLED,
QFC_BENCH_TASK_CPU=<output file>); not part of the collection. A task's share is the CPU time of the main process and
of the children reaped between its start and the next task's start: the forked workers of that task (Ansible reaps
them before it moves on) and their ssh clients. Start-up before the first task is "(start-up)".
"""

from __future__ import annotations

import json
import os
import resource

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: qfc_task_cpu
type: aggregate
short_description: controller CPU per task, for bench/bench_fleet.py
description:
  - Writes the CPU time of the controller's main process and its reaped children per task to the file named by
    QFC_BENCH_TASK_CPU.
requirements: [enable in the callbacks_enabled setting]
"""


def _cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "qfc_task_cpu"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tasks = []  # [name, main s, children s]
        self._name, self._mark = "(start-up)", (0.0, 0.0)  # the process's CPU before Ansible loaded the callback counts

    def _close(self, next_name):
        now = _cpu()
        self._tasks.append([self._name, now[0] - self._mark[0], now[1] - self._mark[1]])
        self._name, self._mark = next_name, now

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close(task.get_name())

    def v2_playbook_on_stats(self, stats):
        self._close(None)
        path = os.environ.get("QFC_BENCH_TASK_CPU")
        if path:
            with open(path, "w") as out:
                json.dump(self._tasks, out)
