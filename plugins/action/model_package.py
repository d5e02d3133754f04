# -*- coding: utf-8 -*-
# Copyright: modelops.serving contributors
# Apache License 2.0 (see galaxy.yml)
"""Action plugin for model_package: points the module at the collection's serving runtime."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    """Fill in runtime_dir (the runtime shipped in this collection), then run the module."""

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if not args.get("runtime_dir"):
            collection_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            args["runtime_dir"] = os.path.join(collection_root, "runtime")
        result.update(self._execute_module(module_name="modelops.serving.model_package", module_args=args,
                                           task_vars=task_vars))
        return result
