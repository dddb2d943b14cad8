#!/usr/bin/env bash
# Fallback for help2man: turns a fedlr program's --help output into a man page.
#   help2man.sh PROGRAM NAME VERSION "ONE-LINE DESCRIPTION" INCLUDE.h2m OUT.1
# The --help layout it reads: "usage: ..." first, a description paragraph,
# then "Heading:" lines followed by "  --option ARG   text" entries (text may
# continue on more-indented lines), and free paragraphs. INCLUDE uses
# help2man's [SECTION] format and is appended.
set -euo pipefail
prog=$1 name=$2 version=$3 desc=$4 inc=$5 out=$6
help=$("$prog" --help 2>&1)
upper=$(tr '[:lower:]' '[:upper:]' <<<"$name")
{
  printf '.TH %s 1 "" "%s %s" "User Commands"\n' "$upper" "$name" "$version"
  printf '.SH NAME\n%s \\- %s\n' "$name" "$desc"
  awk '
    function esc(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); sub(/^[.'"'"']/, "\\\\&&", s); return s }
    NR == 1 { sub(/^usage: */, ""); print ".SH SYNOPSIS"; print ".B " esc($0); print ".SH DESCRIPTION"; desc = 1; next }
    /^$/ { if (desc) { desc = 0; print ".SH OPTIONS" } para = 0; next }
    desc { print esc($0); next }
    /^[^ ].*:$/ { print ".SS " esc(substr($0, 1, length($0) - 1)); next }
    /^  +-/ {
      line = $0; sub(/^ +/, "", line)
      n = match(line, /   */)
      if (n) { opt = substr(line, 1, n - 1); text = substr(line, n + RLENGTH) } else { opt = line; text = "" }
      print ".TP"; print ".B " esc(opt); if (text != "") print esc(text); next
    }
    /^   +/ { line = $0; sub(/^ +/, "", line); print esc(line); next }
    { if (!para) print ".PP"; para = 1; print esc($0) }
  ' <<<"$help"
  # help2man include format: "[SECTION]" lines start sections, the rest is roff.
  awk '/^\[.*\]$/ { s = substr($0, 2, length($0) - 2); print ".SH " toupper(s); next } { print }' "$inc"
} > "$out.tmp"
mv "$out.tmp" "$out"
