// A folder of PNG images: either one subfolder per class (class index = position in the sorted subfolder
// names) or PNGs directly in the folder (no labels). All images must have one size. A first pass reads only
// each file's header (size and colour type) so that bad sizes are reported before anything is decoded; the
// second pass decodes with pngjs, whose output is always 8-bit RGBA (palette, grey+alpha and 16-bit inputs
// are converted by pngjs), and converts to 1 or 3 channels. Alpha is dropped, not composited.

import { closeSync, openSync, readSync, readdirSync, statSync, type Dirent } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { PNG } from 'pngjs';
import { readBytes } from './idx.ts';
import type { ImageDataset } from './image-dataset.ts';

export interface FolderOptions {
  /** Channels of the result; default 3 if any PNG has a colour type with colour (RGB, RGBA, palette), else 1. */
  channels?: 1 | 3;
  /** Data set name; default the folder's name. */
  name?: string;
}

interface PngHeader {
  path: string;
  width: number;
  height: number;
  color: boolean;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width, height and colour type from the IHDR chunk, which the PNG spec requires to come first. */
function readHeader(path: string): PngHeader {
  const buf = new Uint8Array(29);
  let got = 0;
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    got = readSync(fd, buf, 0, 29, 0);
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  if (got < 29 || SIGNATURE.some((b, i) => buf[i] !== b)) throw new Error(`${path}: not a PNG file (bad signature or too short)`);
  const view = new DataView(buf.buffer);
  if (String.fromCharCode(...buf.subarray(12, 16)) !== 'IHDR') throw new Error(`${path}: unreadable PNG (first chunk is not IHDR)`);
  const width = view.getUint32(16, false);
  const height = view.getUint32(20, false);
  const colorType = buf[25];
  if (width === 0 || height === 0) throw new Error(`${path}: unreadable PNG (size ${width}x${height})`);
  return { path, width, height, color: (colorType & 2) !== 0 };
}

/**
 * What went wrong, in our words: pngjs's messages are about its stream plumbing ("There are some read requests
 * waitng on finished stream" for a cut-off file), not about the file.
 */
export function decodeProblem(message: string): string {
  if (/decoded size/.test(message)) return message;
  // pngjs reports a damaged zlib stream and a checksum mismatch alike ("unrecognised content at end of stream")
  if (/unrecognised content|invalid|incorrect|inflate|zlib|distance|stored block|header check|crc/i.test(message)) return 'corrupt: its image data or a checksum is damaged';
  if (/waitng|waiting|end of input|unexpected end|truncat/i.test(message)) return 'truncated: the file ends before its image data does';
  if (/unsupported|not supported|interlace|bit depth|color ?type/i.test(message)) return 'a PNG variant the decoder does not support';
  return 'corrupt: the image data cannot be decoded';
}

function listDir(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => !e.name.startsWith('.')).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  } catch (e) {
    throw new Error(`${dir}: cannot list folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** 'file', 'dir' or 'other', following symbolic links (data sets are often linked in). */
function kind(dir: string, e: Dirent): 'file' | 'dir' | 'other' {
  if (e.isSymbolicLink()) {
    try {
      const st = statSync(join(dir, e.name));
      return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other';
    } catch {
      return 'other'; // a dangling link
    }
  }
  return e.isFile() ? 'file' : e.isDirectory() ? 'dir' : 'other';
}

const isPng = (dir: string, e: Dirent) => kind(dir, e) === 'file' && e.name.toLowerCase().endsWith('.png');

/** Loads every PNG under `dir` (see the file header for the layout). Throws before returning anything partial. */
export function loadImageFolder(dir: string, opts: FolderOptions = {}): ImageDataset {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new Error(`${dir}: image folder not found`);
  }
  if (!isDir) throw new Error(`${dir}: not a folder`);
  const entries = listDir(dir);
  if (entries.length === 0) throw new Error(`${dir}: empty folder (expected PNG images, or one subfolder of PNGs per class)`);
  const topPngs = entries.filter((e) => isPng(dir, e));
  const subdirs = entries.filter((e) => kind(dir, e) === 'dir');
  if (topPngs.length && subdirs.length) {
    throw new Error(`${dir}: mixes PNG files (${topPngs[0].name}, ...) with subfolders (${subdirs[0].name}, ...); use either one subfolder per class or a flat folder of PNGs`);
  }
  let files: string[];
  let fileLabels: number[] | null = null;
  let classes: string[] = [];
  if (subdirs.length) {
    classes = subdirs.map((d) => d.name);
    files = [];
    fileLabels = [];
    classes.forEach((c, k) => {
      const pngs = listDir(join(dir, c)).filter((e) => isPng(join(dir, c), e));
      if (pngs.length === 0) throw new Error(`${join(dir, c)}: class folder '${c}' has no PNG images`);
      for (const p of pngs) {
        files.push(join(dir, c, p.name));
        fileLabels!.push(k);
      }
    });
  } else {
    if (topPngs.length === 0) throw new Error(`${dir}: no PNG images (found ${entries.length} other entries, e.g. ${entries[0].name})`);
    files = topPngs.map((p) => join(dir, p.name));
  }

  const headers = files.map(readHeader);
  const first = headers[0];
  for (const h of headers) {
    if (h.width !== first.width || h.height !== first.height) {
      throw new Error(`${dir}: images differ in size: ${relative(dir, first.path)} is ${first.width}x${first.height} but ${relative(dir, h.path)} is ${h.width}x${h.height} (all images must have the same size)`);
    }
  }
  const channels = opts.channels ?? (headers.some((h) => h.color) ? 3 : 1);
  if (channels !== 1 && channels !== 3) throw new Error(`${dir}: channels must be 1 or 3, got ${channels}`);

  const { width, height } = first;
  const pixels = width * height;
  const images = new Uint8Array(files.length * pixels * channels);
  files.forEach((path, i) => {
    let rgba: Uint8Array;
    try {
      const png = PNG.sync.read(readBytes(path));
      if (png.width !== width || png.height !== height) throw new Error(`decoded size ${png.width}x${png.height} differs from its header`);
      rgba = png.data;
    } catch (e) {
      throw new Error(`${path}: unreadable PNG (${decodeProblem((e as Error).message)})`);
    }
    const out = i * pixels * channels;
    for (let p = 0; p < pixels; p++) {
      const r = rgba[4 * p];
      const g = rgba[4 * p + 1];
      const b = rgba[4 * p + 2];
      if (channels === 3) {
        images[out + 3 * p] = r;
        images[out + 3 * p + 1] = g;
        images[out + 3 * p + 2] = b;
      } else {
        // grey PNGs come back from pngjs with r = g = b; colour ones are reduced to luma (ITU-R 601, as BYOL's grayscale)
        images[out + p] = r === g && g === b ? r : Math.min(255, Math.round(0.2989 * r + 0.587 * g + 0.114 * b));
      }
    }
  });
  return {
    name: opts.name ?? basename(dir),
    images,
    labels: fileLabels ? Int32Array.from(fileLabels) : null,
    n: files.length,
    height,
    width,
    channels,
    classes,
  };
}
