#!/usr/bin/python
"""Ansible wrapper of kvtestbed.lab.image: the cached Debian base image of the lab hosts."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule

try:
    from kvtestbed.lab.image import Recipe, ensure_image, foreign_arch, read_trust_bundle, resolve_mirrors
    from kvtestbed.lab.runtime import LabError
except ImportError:  # the lab's plays run the controller's venv python, where kvtestbed is installed
    ensure_image = None

DOCUMENTATION = r"""
module: lab_image
short_description: Cached debootstrap root for lab hosts, keyed by a hash of its recipe
description:
  - Runs kvtestbed.lab.image, so it needs the controller's python (ansible_python_interpreter set to
    ansible_playbook_python).
options:
  cache_dir: {type: path, required: true, description: Where images live.}
  suite: {type: str, default: bookworm, description: Debian suite.}
  mirror: {type: str, default: auto, description: Debian archive URI; auto reads the controller's apt sources.}
  security_mirror: {type: str, default: auto, description: Debian security URI; auto reads the controller's, empty for none.}
  packages: {type: list, elements: str, required: true, description: Packages debootstrap includes.}
  setup: {type: str, required: true, description: Shell script run in the image once debootstrap is done.}
  trust_bundle: {type: path, default: "", description: "The controller's CA bundle: certificates in it that Debian's lacks (a proxy's, a company CA) are trusted in the image too; empty for none."}
  arches: {type: list, elements: str, default: [], description: "Debian architectures the hosts run besides the controller's own (arm64 for pi4b-arm64): one image each, run under QEMU user emulation."}
  setup_emulated: {type: str, default: "", description: Shell script run after setup in an image of a foreign architecture.}
"""

RETURN = r"""
path: {description: The image's root directory., returned: always, type: str}
id: {description: The recipe hash that names the image., returned: always, type: str}
build_seconds: {description: Seconds the build took (0 when cached)., returned: always, type: float}
foreign: {description: "Per foreign architecture: path, id and build_seconds of its image.", returned: always, type: dict}
"""

NO_KVTESTBED = ("kvtestbed is not importable by %s: run the lab's plays with "
                "ansible_python_interpreter set to ansible_playbook_python (the project's venv)")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path", required=True),
            suite=dict(type="str", default="bookworm"),
            mirror=dict(type="str", default="auto"),
            security_mirror=dict(type="str", default="auto"),
            packages=dict(type="list", elements="str", required=True),
            setup=dict(type="str", required=True),
            trust_bundle=dict(type="path", default=""),
            arches=dict(type="list", elements="str", default=[]),
            setup_emulated=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    if ensure_image is None:
        module.fail_json(msg=NO_KVTESTBED % sys.executable)
    p = module.params
    try:
        mirror, security_mirror = resolve_mirrors(p["mirror"], p["security_mirror"])
        trust = read_trust_bundle(p["trust_bundle"])
        recipe = Recipe(p["suite"], mirror, security_mirror, p["packages"], p["setup"], trust)
        image = ensure_image(p["cache_dir"], recipe, check_mode=module.check_mode)
        foreign = {}
        for arch in sorted(set(p["arches"])):
            if not foreign_arch(arch):  # the controller's own: the native image
                foreign[arch] = image
                continue
            emulated = Recipe(p["suite"], mirror, security_mirror, p["packages"],
                              p["setup"] + "\n" + p["setup_emulated"], trust, arch=arch)
            foreign[arch] = ensure_image(p["cache_dir"], emulated, check_mode=module.check_mode)
    except LabError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=any(i.changed for i in [image, *foreign.values()]), path=image.path,
                     id=image.id, build_seconds=image.build_seconds, mirror=mirror,
                     foreign={arch: {"path": i.path, "id": i.id, "build_seconds": i.build_seconds,
                                     "emulated": i is not image} for arch, i in foreign.items()})


if __name__ == "__main__":
    main()
