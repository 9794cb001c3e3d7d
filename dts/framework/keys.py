# SPDX-License-Identifier: BSD-3-Clause
"""Static key pairs for secured daemons (docs/security.md): each made by
`mtpd keygen` into a private directory, as an operator would."""
import os
import shutil
import tempfile

from .testbed import TESTBED, run


class Keyring:
    """Key pairs by node id; remove() deletes the files."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mtpd-keys-")
        os.chmod(self.dir, 0o700)
        self.public = {}

    def make(self, node_id):
        path = self.key_file(node_id)
        self.public[node_id] = run(TESTBED["mtpd"], "keygen", path).stdout.strip()
        return self.public[node_id]

    def key_file(self, node_id):
        return os.path.join(self.dir, f"node{node_id}.key")

    def security(self, node_id, **extra):
        """The security section of node_id's config."""
        if node_id not in self.public:
            self.make(node_id)
        return dict({"mode": "required", "key_file": self.key_file(node_id)}, **extra)

    def peer(self, peer, node_id):
        """A peers entry (dict) with node_id's public key added."""
        if node_id not in self.public:
            self.make(node_id)
        return dict(peer, public_key=self.public[node_id])

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)
