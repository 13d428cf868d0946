/** Pure helpers of the DESP Data panel: sizes, dates, footprints. */
import type { IGeometry, IItemSummary } from './api';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; null → "—". */
export function humanBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '—';
  }
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** The item's time as one short label: its datetime, or its start/end range. */
export function itemTime(item: IItemSummary): string {
  if (item.datetime) {
    return shortDate(item.datetime);
  }
  if (item.start_datetime || item.end_datetime) {
    return `${item.start_datetime ? shortDate(item.start_datetime) : '..'} – ${
      item.end_datetime ? shortDate(item.end_datetime) : '..'
    }`;
  }
  return 'no time';
}

/** "2024-01-01T00:00:00Z" → "2024-01-01 00:00 UTC" (other strings unchanged). */
export function shortDate(value: string): string {
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?(Z|\+00:00)?$/.exec(value);
  if (!match) {
    return value;
  }
  return `${match[1]} ${match[2]}${match[5] ? ' UTC' : ''}`;
}

/** "expires 2024-01-08 (in 3 days)" / "expired" / "kept until removed". */
export function retentionLabel(expires: string | null, now: Date = new Date()): string {
  if (!expires) {
    return 'no expiry';
  }
  const when = new Date(expires);
  if (Number.isNaN(when.getTime())) {
    return `expires ${expires}`;
  }
  const days = (when.getTime() - now.getTime()) / 86400000;
  const date = when.toISOString().slice(0, 10);
  if (days < 0) {
    return `expired ${date}`;
  }
  if (days < 1) {
    const hours = Math.max(1, Math.round(days * 24));
    return `expires ${date} (in ${hours} h)`;
  }
  return `expires ${date} (in ${Math.round(days)} d)`;
}

/** The STAC datetime interval of two `YYYY-MM-DD` inputs (open ends as `..`); null when both are empty. */
export function datetimeInterval(from: string, to: string): string | null {
  const start = from.trim();
  const end = to.trim();
  if (!start && !end) {
    return null;
  }
  return `${start ? `${start}T00:00:00Z` : '..'}/${end ? `${end}T23:59:59Z` : '..'}`;
}

type Ring = Array<[number, number]>;

/** The outer rings of a GeoJSON geometry as lists of [lon, lat]. */
export function outerRings(geometry: IGeometry | null | undefined): Ring[] {
  if (!geometry) {
    return [];
  }
  const coordinates = geometry.coordinates as any;
  switch (geometry.type) {
    case 'Polygon':
      return Array.isArray(coordinates) && coordinates.length ? [toRing(coordinates[0])] : [];
    case 'MultiPolygon':
      return Array.isArray(coordinates) ? coordinates.filter((p: any) => Array.isArray(p) && p.length).map((p: any) => toRing(p[0])) : [];
    case 'Point':
      return Array.isArray(coordinates) ? [toRing([coordinates])] : [];
    case 'MultiPoint':
    case 'LineString':
      return Array.isArray(coordinates) ? [toRing(coordinates)] : [];
    case 'GeometryCollection':
      return (geometry.geometries ?? []).flatMap(outerRings);
    default:
      return [];
  }
}

function toRing(points: any): Ring {
  if (!Array.isArray(points)) {
    return [];
  }
  return points
    .filter((p: any) => Array.isArray(p) && p.length >= 2 && Number.isFinite(p[0]) && Number.isFinite(p[1]))
    .map((p: any) => [Number(p[0]), Number(p[1])] as [number, number]);
}

export interface IFootprintShape {
  /** SVG `points` attributes of the polygons, in a `width`×`height` world map (lon -180…180, lat 90…-90). */
  polygons: string[];
  /** A marker for footprints too small to see at this scale: centre and radius. */
  marker: { x: number; y: number } | null;
}

/** The footprint of an item (its geometry, else its bbox) drawn in a small equirectangular world frame. */
export function footprintShape(item: IItemSummary, width: number, height: number): IFootprintShape {
  let rings = outerRings(item.geometry).filter(ring => ring.length > 0);
  if (!rings.length && item.bbox && item.bbox.length >= 4) {
    const [w, s, e, n] = item.bbox.length >= 6 ? [item.bbox[0], item.bbox[1], item.bbox[3], item.bbox[4]] : item.bbox;
    rings = [
      [
        [w, s],
        [e, s],
        [e, n],
        [w, n]
      ]
    ];
  }
  if (!rings.length) {
    return { polygons: [], marker: null };
  }
  const project = ([lon, lat]: [number, number]): [number, number] => {
    // Longitudes given as 0…360 are folded into -180…180.
    const x = lon > 180 ? lon - 360 : lon;
    return [((x + 180) / 360) * width, ((90 - lat) / 180) * height];
  };
  const projected = rings.map(ring => ring.map(project));
  const xs = projected.flat().map(p => p[0]);
  const ys = projected.flat().map(p => p[1]);
  const spanX = Math.max(...xs) - Math.min(...xs);
  const spanY = Math.max(...ys) - Math.min(...ys);
  const polygons = projected.map(ring => ring.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join(' '));
  const marker =
    spanX < 2 && spanY < 2
      ? { x: (Math.max(...xs) + Math.min(...xs)) / 2, y: (Math.max(...ys) + Math.min(...ys)) / 2 }
      : null;
  return { polygons, marker };
}

/** The href to copy into the cache for an item: its data asset (or first non-thumbnail asset); null if unknown. */
export function copySource(item: IItemSummary): { href: string; asset: string } | null {
  const links: Array<{ name: string; href: string; roles: string[] }> = [];
  for (const asset of item.assets ?? []) {
    if (typeof asset === 'object' && asset && typeof asset.href === 'string') {
      links.push({ name: asset.name, href: asset.href, roles: asset.roles ?? [] });
    } else if (typeof asset === 'string' && item.asset_hrefs && item.asset_hrefs[asset]) {
      links.push({ name: asset, href: item.asset_hrefs[asset], roles: [] });
    }
  }
  if (!links.length && item.asset_hrefs) {
    for (const [name, href] of Object.entries(item.asset_hrefs)) {
      links.push({ name, href, roles: [] });
    }
  }
  const usable = links.filter(link => !link.roles.includes('thumbnail') && !link.roles.includes('overview') && link.name !== 'thumbnail');
  const best =
    usable.find(link => link.roles.includes('data')) ?? usable.find(link => link.name === 'data') ?? usable[0];
  return best ? { href: best.href, asset: best.name } : null;
}

/** A cache-area name for a copy of an item: `<collection>/<item>`, safe characters only. */
export function copyName(item: IItemSummary, asset: string, href: string): string {
  const clean = (text: string) => text.replace(/[^A-Za-z0-9._-]+/g, '_');
  const last = href.split('?')[0].replace(/\/+$/, '').split('/').pop() || asset;
  return `${clean(item.collection || 'items')}/${clean(item.id)}/${clean(last)}`;
}
