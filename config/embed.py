#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# Writes a C++ source that holds a text file as a string: the embedded
# default config is then the very file config/default.yaml, not a copy.
import sys

src, dst, name = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, encoding="utf-8").read()
delim = "mtp_embed"
assert ")" + delim + '"' not in data
with open(dst, "w", encoding="utf-8") as out:
    out.write("// Generated from %s by config/embed.py. Do not edit.\n" % src.split("/")[-1])
    out.write("#include <string>\nnamespace mtp::cfg {\n")
    out.write("extern const char %s[];\n" % name)
    out.write('const char %s[] = R"%s(%s)%s";\n' % (name, delim, data, delim))
    out.write("}  // namespace mtp::cfg\n")
