#!/usr/bin/python
"""Build the lab's Debian base image with debootstrap once, and again only when its recipe changes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import time

DOCUMENTATION = r"""
module: lab_image
short_description: Cached debootstrap root for lab hosts, keyed by a hash of its recipe
options:
  cache_dir: {type: path, required: true, description: Where images live.}
  suite: {type: str, default: bookworm, description: Debian suite.}
  mirror: {type: str, default: auto, description: Debian archive URI; auto reads the controller's apt sources.}
  security_mirror: {type: str, default: auto, description: Debian security URI; auto reads the controller's, empty for none.}
  packages: {type: list, elements: str, required: true, description: Packages debootstrap includes.}
  setup: {type: str, required: true, description: Shell script run in the image once debootstrap is done.}
  trust_bundle: {type: path, default: "", description: "The controller's CA bundle: certificates in it that Debian's lacks (a proxy's, a company CA) are trusted in the image too; empty for none."}
"""

RETURN = r"""
path: {description: The image's root directory., returned: always, type: str}
id: {description: The recipe hash that names the image., returned: always, type: str}
build_seconds: {description: Seconds the build took (0 when cached)., returned: always, type: float}
"""


def recipe_id(suite, mirror, security_mirror, packages, setup, trust=""):
    recipe = json.dumps({"suite": suite, "mirror": mirror, "security": security_mirror,
                         "packages": sorted(packages), "setup": setup,
                         "trust": hashlib.sha256(trust.encode()).hexdigest() if trust else ""}, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


PEM_END = "-----END CERTIFICATE-----"


def pem_blocks(text):
    blocks = []
    for chunk in text.split(PEM_END)[:-1]:
        start = chunk.find("-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(chunk[start:].strip() + "\n" + PEM_END + "\n")
    return blocks


def add_controller_trust(root, bundle_text, run):
    """Trust in the image what the controller trusts beyond Debian's own list (proxies, company CAs)."""
    with open(os.path.join(root, "etc/ssl/certs/ca-certificates.crt")) as handle:
        known = {block.strip() for block in pem_blocks(handle.read())}
    extra = [block for block in pem_blocks(bundle_text) if block.strip() not in known]
    target = os.path.join(root, "usr/local/share/ca-certificates")
    os.makedirs(target, exist_ok=True)
    for index, block in enumerate(extra):
        with open(os.path.join(target, "kvtestbed-controller-%d.crt" % index), "w") as handle:
            handle.write(block)
    if extra:
        run(["chroot", root, "update-ca-certificates"])
    return len(extra)


def _unmount_below(path):
    from ansible.module_utils.lab_runtime import mounts_below, run

    for point in mounts_below(path):
        run(["umount", "-l", point], check=False)


def _in_use(path):
    needle = f"lowerdir={os.path.realpath(path)}"
    with open("/proc/self/mountinfo") as handle:
        return any(needle in line for line in handle)


def _remove_tree(path):
    # a killed debootstrap leaves /proc and /sys of the host mounted inside: never delete through them
    _unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


def build(module, target, params):
    from ansible.module_utils.lab_runtime import run

    staging = "%s.build-%d" % (target, os.getpid())
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(params["packages"]),
             params["suite"], staging, params["mirror"]])
        setup_path = os.path.join(staging, "root", ".lab-setup.sh")
        with open(setup_path, "w") as handle:
            handle.write(params["setup"])
        env_file = os.path.join(staging, "root", ".lab-setup.env")
        with open(env_file, "w") as handle:
            handle.write("SUITE={}\nMIRROR={}\nSECURITY_MIRROR={}\n".format(params["suite"], params["mirror"], params["security_mirror"]))
        if params["trust"]:
            add_controller_trust(staging, params["trust"], run)
        run(["chroot", staging, "/bin/sh", "-ec", ". /root/.lab-setup.env; . /root/.lab-setup.sh"])
        os.remove(setup_path)
        os.remove(env_file)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            _remove_tree(staging)  # another lab built the same recipe meanwhile: theirs is as good
    except Exception as exc:  # noqa: BLE001 - any failure must leave no half image behind
        _remove_tree(staging)
        module.fail_json(msg=f"base image build failed: {str(exc).splitlines()[0]}")


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path", required=True),
            suite=dict(type="str", default="bookworm"),
            mirror=dict(type="str", default="auto"),
            security_mirror=dict(type="str", default="auto"),
            packages=dict(type="list", elements="str", required=True),
            setup=dict(type="str", required=True),
            trust_bundle=dict(type="path", default=""),
        ),
        supports_check_mode=True,
    )
    from ansible.module_utils.lab_debian_mirror import find_mirror

    params = module.params
    for key, kind in (("mirror", "archive"), ("security_mirror", "security")):
        if params[key] == "auto":
            params[key] = find_mirror(kind) or ""
    if not params["mirror"]:
        module.fail_json(msg="no Debian mirror in this controller's apt sources; set lab_image_mirror")
    params["trust"] = ""
    if params["trust_bundle"]:
        try:
            with open(params["trust_bundle"]) as handle:
                params["trust"] = handle.read()
        except OSError as exc:
            module.fail_json(msg="lab_image_trust_bundle %s: %s" % (params["trust_bundle"], exc.strerror))
    image_id = recipe_id(params["suite"], params["mirror"], params["security_mirror"],
                         params["packages"], params["setup"], params["trust"])
    base = os.path.join(params["cache_dir"], params["suite"])
    target = f"{base}-{image_id}"
    for leftover in glob.glob(base + "-*.build-*"):
        _remove_tree(leftover)
    if os.path.isdir(target):
        module.exit_json(changed=False, path=target, id=image_id, build_seconds=0.0)
    if module.check_mode:
        module.exit_json(changed=True, path=target, id=image_id, build_seconds=0.0)
    started = time.monotonic()
    build(module, target, params)
    elapsed = round(time.monotonic() - started, 1)
    # older recipes are garbage once no host root is stacked on them
    for old in glob.glob(base + "-*"):
        if old != target and ".build-" not in old and not _in_use(old):
            _remove_tree(old)
    module.exit_json(changed=True, path=target, id=image_id, build_seconds=elapsed, mirror=params["mirror"])


if __name__ == "__main__":
    main()
