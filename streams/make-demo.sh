#!/usr/bin/env bash
# Regenerates streams/demo: a 16 s, two-rendition HLS VOD used by the integration tests
# and the browser playback check. Committed output keeps tests fast and offline;
# this script exists so the stream can be reproduced or changed deliberately.
set -euo pipefail
cd "$(dirname "$0")"

out=demo
rm -rf "$out"
mkdir -p "$out/180p" "$out/270p"

# Why these flags:
#  - 25 fps, -g/-keyint_min 50, -sc_threshold 0 and force_key_frames: a keyframe exactly
#    every 2 s, so every segment is exactly 2 s and starts with an IDR (the server loops
#    segments and a player must be able to start decoding at any of them).
#  - mpegts_flags=+initial_discontinuity: seg_000's first packet of every PID carries the
#    TS discontinuity_indicator (the HLS muxer keeps one TS context, so only seg_000 gets
#    it; checked). That is exactly the segment that follows seg_007 when the server loops
#    the VOD as a live stream, so a player accepts the timestamp jump back to the start.
#  - -bitexact and x264 -threads 1: no version strings and no thread-timing-dependent
#    rate control, so regenerating with the same ffmpeg gives the same bytes and a
#    clean git diff.
#  - var_stream_map: one run writes both renditions and a master playlist with
#    BANDWIDTH, RESOLUTION and CODECS filled in by ffmpeg.
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=480x270:rate=25:duration=16" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=16" \
  -filter_complex "[0:v]split=2[v0][v1];[v0]scale=320:180[v180];[v1]null[v270]" \
  -map "[v180]" -map 1:a -map "[v270]" -map 1:a \
  -c:v libx264 -threads 1 -preset veryfast -profile:v main -pix_fmt yuv420p \
  -r 25 -g 50 -keyint_min 50 -sc_threshold 0 -force_key_frames "expr:gte(t,n_forced*2)" \
  -b:v:0 150k -maxrate:v:0 165k -bufsize:v:0 300k \
  -b:v:1 300k -maxrate:v:1 330k -bufsize:v:1 600k \
  -c:a aac -b:a 48k -ac 1 -ar 48000 \
  -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
  -f hls -hls_time 2 -hls_playlist_type vod \
  -hls_ts_options mpegts_flags=+initial_discontinuity \
  -hls_segment_filename "$out/%v/seg_%03d.ts" \
  -master_pl_name master.m3u8 \
  -var_stream_map "v:0,a:0,name:180p v:1,a:1,name:270p" \
  "$out/%v/index.m3u8"

# Sanity: both renditions decode end to end.
ffmpeg -hide_banner -v error -i "$out/master.m3u8" -map 0 -f null -
du -sh "$out"
