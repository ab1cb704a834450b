#!/usr/bin/env python3
"""A scripted LL-HLS packager for the tests (python3 stdlib + ffmpeg, nothing else).

    python3 tests/llhls_packager.py OUTDIR [--seconds 90] [--fps 24] [--part-frames 8]
                                           [--parts-per-segment 6] [--window 6] [--no-block-reload]

ffmpeg encodes a live test picture (`-re`, so in real time) into fragmented MP4 on its stdout,
one fragment (moof+mdat) per keyframe, a keyframe every PART_FRAMES frames: each fragment is
one LL-HLS part (8 frames at 24 fps = 0.333 s). This script reads the boxes as they arrive and
publishes, in OUTDIR:

  init.mp4                 the initialisation section (ftyp + moov)
  seg{N}.part{K}.m4s       part K of segment N, written as soon as ffmpeg emits it
  seg{N}.m4s               segment N (its parts, concatenated), once its last part is in
  index.m3u8               the media playlist, rewritten after every part

Each segment carries EXT-X-PROGRAM-DATE-TIME: the wall-clock time its first frame was made, so
a player's `Date.now() - playingDate` is the real (glass-to-glass) latency.

The playlist has EXT-X-PART-INF, EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=…
(unless --no-block-reload), the EXT-X-PARTs of the segments near the live edge, and an
EXT-X-PRELOAD-HINT for the next part. Every file is written to a temp name and renamed, so a
reader never sees half of one; a part or segment is on disk before the playlist that names it.

On stdout, one JSON line per event, flushed at once (the tests time the gate against these):
  {"event": "init", "t": …}
  {"event": "playlist", "t": UNIX_SECONDS_AFTER_RENAME, "before": UNIX_SECONDS_BEFORE_WRITING,
   "msn": LAST_COMPLETE_MSN_OR_-1, "parts": PARTS_OF_THE_SEGMENT_IN_PROGRESS, "next_msn": …,
   "version": N}
(the rename happened between "before" and "t"; on a busy machine the gap can be milliseconds)
  {"event": "end", "t": …, "reason": "…"}
Errors go to stderr. SIGTERM/SIGINT stop ffmpeg (by its PID) and exit 0; the playlist is left
as it was (a packager that stopped), or gets EXT-X-ENDLIST with --endlist.
"""

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import time

# ---------------------------------------------------------------------------------------------
# ISO BMFF: just enough to find fragments and their durations
# ---------------------------------------------------------------------------------------------


def read_exact(stream, n):
    """n bytes, or fewer at EOF."""
    chunks = []
    while n > 0:
        b = stream.read(n)
        if not b:
            break
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def read_box(stream):
    """(type, whole box bytes) of the next top-level box, or None at EOF."""
    head = read_exact(stream, 8)
    if len(head) < 8:
        return None
    size, kind = struct.unpack(">I4s", head)
    extra = b""
    if size == 1:
        extra = read_exact(stream, 8)
        size = struct.unpack(">Q", extra)[0]
        hdr = 16
    elif size == 0:
        # Runs to EOF: only ever an mdat at the very end.
        body = stream.read()
        return kind.decode("latin-1"), head + body
    else:
        hdr = 8
    body = read_exact(stream, size - hdr)
    if len(body) < size - hdr:
        return None
    return kind.decode("latin-1"), head + extra + body


def children(data, start, end):
    """(type, payload_start, box_end) of the boxes in data[start:end]."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - at
        if size < hdr:
            break
        yield kind.decode("latin-1"), at + hdr, at + size
        at += size


def find_path(data, start, end, path):
    """Payload ranges of every box at `path` (e.g. ["traf", "trun"]) below data[start:end]."""
    if not path:
        return [(start, end)]
    out = []
    for kind, s, e in children(data, start, end):
        if kind == path[0]:
            out.extend(find_path(data, s, e, path[1:]))
    return out


class Track:
    """What the init segment says about the (one) video track."""

    def __init__(self, moov):
        self.timescale = None
        self.default_duration = 0
        for s, e in find_path(moov, 8, len(moov), ["trak", "mdia", "mdhd"]):
            version = moov[s]
            if version == 1:
                self.timescale = struct.unpack(">I", moov[s + 20 : s + 24])[0]
            else:
                self.timescale = struct.unpack(">I", moov[s + 12 : s + 16])[0]
        for s, e in find_path(moov, 8, len(moov), ["mvex", "trex"]):
            # version/flags, track_ID, default_sample_description_index, default_sample_duration
            self.default_duration = struct.unpack(">I", moov[s + 12 : s + 16])[0]
        if not self.timescale:
            raise ValueError("no mdhd timescale in moov")


def fragment_timing(moof, track):
    """(baseMediaDecodeTime, duration) of a moof, in the track's timescale."""
    base = None
    duration = 0
    for ts, te in find_path(moof, 8, len(moof), ["traf"]):
        default = track.default_duration
        for kind, s, e in children(moof, ts, te):
            flags = struct.unpack(">I", moof[s : s + 4])[0] & 0xFFFFFF
            version = moof[s]
            if kind == "tfhd":
                at = s + 8  # version/flags, track_ID
                if flags & 0x01:
                    at += 8
                if flags & 0x02:
                    at += 4
                if flags & 0x08:
                    default = struct.unpack(">I", moof[at : at + 4])[0]
            elif kind == "tfdt":
                if version == 1:
                    base = struct.unpack(">Q", moof[s + 4 : s + 12])[0]
                else:
                    base = struct.unpack(">I", moof[s + 4 : s + 8])[0]
            elif kind == "trun":
                count = struct.unpack(">I", moof[s + 4 : s + 8])[0]
                at = s + 8
                if flags & 0x01:
                    at += 4
                if flags & 0x04:
                    at += 4
                per = 4 * bin(flags & 0xF00).count("1")
                if flags & 0x100:
                    for i in range(count):
                        duration += struct.unpack(">I", moof[at + i * per : at + i * per + 4])[0]
                else:
                    duration += count * default
    return base, duration


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def log(event, **fields):
    fields = {"event": event, "t": round(time.time(), 6), **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Packager:
    def __init__(self, args):
        self.out = args.outdir
        self.parts_per_segment = args.parts_per_segment
        self.part_target = args.part_frames / args.fps
        self.segment_target = self.part_target * args.parts_per_segment
        self.target_duration = max(1, round(self.segment_target + 0.0001))
        self.window = args.window
        self.block_reload = not args.no_block_reload
        self.endlist = args.endlist
        self.track = None
        self.segments = []  # [(msn, duration_seconds, [part durations])]
        self.parts = []  # durations of the parts of the segment in progress
        self.msn = args.start_msn  # the segment in progress
        self.version = 0
        self.epoch = None  # wall-clock time of media time 0

    # File names: the tests and the README example use these shapes.
    @staticmethod
    def part_name(msn, k):
        return f"seg{msn}.part{k}.m4s"

    @staticmethod
    def segment_name(msn):
        return f"seg{msn}.m4s"

    def init(self, data):
        moov = None
        for kind, s, e in children(data, 0, len(data)):
            if kind == "moov":
                moov = data[s - 8 : e]
        self.track = Track(moov)
        write_atomic(os.path.join(self.out, "init.mp4"), data)
        log("init", timescale=self.track.timescale)

    def fragment(self, moof, mdat):
        base, ticks = fragment_timing(moof, self.track)
        duration = ticks / self.track.timescale
        start = (base or 0) / self.track.timescale
        if self.epoch is None:
            # With -re, a fragment comes out when its last frame is due: the wall-clock time of
            # media time 0 is then now minus the media time at its end.
            self.epoch = time.time() - (start + duration)
        k = len(self.parts)
        write_atomic(os.path.join(self.out, self.part_name(self.msn, k)), moof + mdat)
        self.parts.append((duration, moof + mdat, start))
        if len(self.parts) == self.parts_per_segment:
            data = b"".join(p[1] for p in self.parts)
            write_atomic(os.path.join(self.out, self.segment_name(self.msn)), data)
            durations = [p[0] for p in self.parts]
            self.segments.append((self.msn, sum(durations), durations, self.parts[0][2]))
            self.msn += 1
            self.parts = []
            self.prune()
        self.publish()

    def prune(self):
        """Lists `window` segments; deletes the files of those 4 or more behind the window."""
        self.segments = self.segments[-self.window :]
        horizon = self.segments[0][0] - 4
        for name in os.listdir(self.out):
            if name.startswith("seg") and name.endswith(".m4s"):
                try:
                    n = int(name[3:].split(".")[0])
                except ValueError:
                    continue
                if n < horizon:
                    try:
                        os.unlink(os.path.join(self.out, name))
                    except FileNotFoundError:
                        pass

    def playlist(self, endlist=False):
        first = self.segments[0][0] if self.segments else self.msn
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:6",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
        ]
        part_target = f"{self.part_target + 0.0005:.3f}"
        hold_back = 3 * float(part_target)
        if self.block_reload:
            lines.append(f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={hold_back:.3f}")
        else:
            lines.append(f"#EXT-X-SERVER-CONTROL:PART-HOLD-BACK={hold_back:.3f}")
        lines += [
            f"#EXT-X-PART-INF:PART-TARGET={part_target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            '#EXT-X-MAP:URI="init.mp4"',
        ]
        # Parts are listed for the segments within 3 target durations of the end (RFC 8216bis
        # §4.4.4.9 lets a server drop older ones); two complete segments plus the one in progress.
        with_parts = {msn for msn, _, _, _ in self.segments[-2:]}
        for msn, duration, parts, start in self.segments:
            lines.append(self.date_line(start))
            if msn in with_parts:
                for k, d in enumerate(parts):
                    lines.append(self.part_line(msn, k, d))
            lines.append(f"#EXTINF:{duration:.5f},")
            lines.append(self.segment_name(msn))
        if self.parts:
            lines.append(self.date_line(self.parts[0][2]))
        for k, (d, _, _) in enumerate(self.parts):
            lines.append(self.part_line(self.msn, k, d))
        if endlist:
            lines.append("#EXT-X-ENDLIST")
        else:
            hint = self.part_name(self.msn, len(self.parts))
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint}"')
        return "\n".join(lines) + "\n"

    def date_line(self, media_start):
        """EXT-X-PROGRAM-DATE-TIME of a segment: when its first frame was made (players can then
        tell their wall-clock latency)."""
        t = self.epoch + media_start
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        return f"#EXT-X-PROGRAM-DATE-TIME:{stamp}"

    def part_line(self, msn, k, duration):
        # A keyframe starts every part (-g PART_FRAMES), so each one is independent.
        return f'#EXT-X-PART:DURATION={duration:.5f},URI="{self.part_name(msn, k)}",INDEPENDENT=YES'

    def publish(self, endlist=False):
        text = self.playlist(endlist).encode()
        before = time.time()
        write_atomic(os.path.join(self.out, "index.m3u8"), text)
        self.version += 1
        last = self.segments[-1][0] if self.segments else -1
        log("playlist", msn=last, parts=len(self.parts), next_msn=self.msn, version=self.version, before=round(before, 6))


def ffmpeg_command(args):
    size = args.size
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={args.fps}",
        "-t", str(args.seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", str(args.part_frames), "-keyint_min", str(args.part_frames), "-sc_threshold", "0",
        "-b:v", "300k", "-an",
        "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
        "-flush_packets", "1", "pipe:1",
    ]  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--seconds", type=float, default=90, help="stop after this much media")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--part-frames", type=int, default=8, help="frames per part (a keyframe each)")
    p.add_argument("--parts-per-segment", type=int, default=6)
    p.add_argument("--window", type=int, default=6, help="segments listed")
    p.add_argument("--start-msn", type=int, default=0)
    p.add_argument("--size", default="320x180")
    p.add_argument("--no-block-reload", action="store_true", help="do not advertise CAN-BLOCK-RELOAD")
    p.add_argument("--endlist", action="store_true", help="end with EXT-X-ENDLIST when ffmpeg stops")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)

    ffmpeg = subprocess.Popen(ffmpeg_command(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    def stop(signum, _frame):
        try:
            os.kill(ffmpeg.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ffmpeg.wait()
        log("end", reason=f"signal {signum}")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    packager = Packager(args)
    init = b""
    moof = None
    try:
        while True:
            box = read_box(ffmpeg.stdout)
            if box is None:
                break
            kind, data = box
            if kind in ("ftyp", "moov"):
                init += data
                if kind == "moov":
                    packager.init(init)
            elif kind == "moof":
                moof = data
            elif kind == "mdat" and moof is not None:
                packager.fragment(moof, data)
                moof = None
            # styp, sidx, mfra, free: not needed
    except BrokenPipeError:
        pass
    code = ffmpeg.wait()
    if args.endlist and packager.track is not None:
        packager.publish(endlist=True)
    log("end", reason=f"ffmpeg exited {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
