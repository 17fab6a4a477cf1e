#!/usr/bin/env bash
# Keeps the house of docs/architecture.md true: the rooms of host/src in
# data-flow order, each importing only rooms above it (`crate::ROOM`), so
# that no import circle can come back. Prints every import that runs up
# the list and exits 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/../host/src"
rooms=(config record quota plugin source transform buffer destination dead_letter pipeline metrics serve cli)
status=0
for ((i = 0; i < ${#rooms[@]}; i++)); do
    room=${rooms[$i]}
    files=$(find "$room" -name "*.rs" 2>/dev/null; if [[ -f $room.rs ]]; then echo "$room.rs"; fi)
    [[ -n $files ]] || { echo "check-rooms: no room $room in host/src" >&2; exit 2; }
    for ((j = i + 1; j < ${#rooms[@]}; j++)); do
        above=${rooms[$j]}
        # A use, a path in code or a doc link: any of them ties the rooms.
        hits=$(grep -nE "crate::${above}\b" $files || true)
        if [[ -n $hits ]]; then
            echo "$room/ may not import $above/ (it comes later in data-flow order):"
            echo "$hits" | sed 's/^/    /'
            status=1
        fi
    done
done
# Rooms not in the list would escape the check.
for path in *; do
    name=${path%.rs}
    case " ${rooms[*]} lib main " in
        *" $name "*) ;;
        *) echo "check-rooms: host/src/$path is not a room of scripts/check-rooms.sh" >&2; status=1 ;;
    esac
done
[[ $status == 0 ]] && echo "rooms: ${#rooms[@]} in order, no import runs up (scripts/check-rooms.sh)"
exit $status
