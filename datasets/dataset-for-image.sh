# Sourced by bench.sh and scale.sh: the traces and bundle that belong to $image.
#
# Expects: here (datasets/), work, image, bin (target/release), say. Sets: traces (a directory
# with train/ and test/), bundle. The repository's traces carry the identity of the image they
# were recorded on; a rebuilt image (debootstrap fetches current packages) gets its own, in
# WORK, recorded once by record.sh (about 6 minutes) and reused while they belong to it, and a
# bundle fitted on them, refitted only when a training trace is newer.
if [ ! -f "$work/appliance.sha256" ] || [ "$work/appliance.sha256" -ot "$image" ]; then
  sha256sum "$image" > "$work/appliance.sha256"
fi
sha=$(awk '{print $1}' "$work/appliance.sha256")
traces=$here/traces
bundle=$here/appliance.vmtp
# image_of DIR: the image SHA-256 of DIR's first held-out trace (empty if there is none).
image_of() {
  local first
  first=$(ls "$1"/test/*.vmtrace 2>/dev/null | head -1)
  [ -n "$first" ] || return 0
  "$bin/vmt-record" export "$first" | sed -n 's/^# image_sha256=//p'
}
want=$(image_of "$traces")
if [ "$want" != "$sha" ]; then
  traces=$work/traces-rec/traces
  bundle=$work/appliance.vmtp
  if [ "$(image_of "$traces")" = "$sha" ] && [ -d "$traces/train" ]; then
    say "traces in the repository belong to image ${want:-?}; reusing $traces, recorded for this one ($sha)"
  else
    say "traces belong to image ${want:-?}, not this one ($sha): re-recording into $traces"
    (cd "$work" && rm -rf traces-rec "$bundle" && mkdir traces-rec \
      && cp -r "$here/tasks" "$here/record.sh" traces-rec/ \
      && WORK=$work VMT_RECORD=$bin/vmt-record bash traces-rec/record.sh)
  fi
  if [ ! -f "$bundle" ] || [ -n "$(find "$traces/train" -newer "$bundle" -print -quit)" ]; then
    "$bin/vmt-train" fit --traces "$traces/train" --out "$bundle"
  fi
fi
[ -f "$bundle" ] || "$bin/vmt-train" fit --traces "$traces/train" --out "$bundle"
