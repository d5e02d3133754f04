# -*- coding: utf-8 -*-
# Copyright: (c) 2026, modelops.serving maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Lookup: the image ID held in a docker save tarball on the controller."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: image_archive_id
author:
  - modelops.serving maintainers (@modelops)
version_added: 0.1.0
short_description: The image ID stored in a C(docker save) tarball on the controller
description:
  - Reads only the tarball's C(manifest.json), not its layers, so it costs milliseconds even for large images.
  - M(modelops.serving.model_package) writes such tarballs (its O(modelops.serving.model_package#module:archive_path)).
  - The role modelops.serving.model_deploy compares the ID with the image the host already has, and copies and
    loads the archive only when they differ.
options:
  _terms:
    description: Paths of tarballs on the controller.
    type: list
    elements: path
    required: true
notes:
  - A path that is not a readable C(docker save) tarball fails the task, naming the path.
"""

EXAMPLES = r"""
- name: Show the image ID of the archive
  ansible.builtin.debug:
    msg: "{{ lookup('modelops.serving.image_archive_id', 'files/iris-v2.tar') }}"
"""

RETURN = r"""
_raw:
  description: One C(sha256:...) image ID per path.
  type: list
  elements: str
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.modelops.serving.plugins.module_utils.packaging import archive_image_id


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        ids = []
        for term in terms:
            image_id = archive_image_id(term)
            if image_id is None:
                raise AnsibleLookupError("%s is not a readable docker save tarball (no manifest.json with a Config)" % term)
            ids.append(image_id)
        return ids
