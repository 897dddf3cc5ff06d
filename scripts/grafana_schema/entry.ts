// Types whose JSON schema tests/observability validates the dashboards against (generate.sh turns every exported
// type of this file into a definition of tests/observability/grafana-dashboard.schema.json).
//
// Dashboard: the classic (v1, "schemaVersion") dashboard JSON that Grafana's file provisioning reads, from the
// generated raw types of @grafana/schema. Panel `options` and `fieldConfig.defaults.custom` are typed per panel
// plugin in @grafana/schema; Partial<> because Grafana fills the options a dashboard leaves out with defaults.
import type { DataQuery } from '@grafana/schema/dist/types/common/common.gen';
import type { Dashboard } from '@grafana/schema/dist/types/raw/dashboard/x/types.gen';
import type { Options as RawStatOptions } from '@grafana/schema/dist/types/raw/composable/stat/panelcfg/x/types.gen';
import type { Options as RawTableOptions } from '@grafana/schema/dist/types/raw/composable/table/panelcfg/x/types.gen';
import type {
  FieldConfig as RawTableFieldConfig,
} from '@grafana/schema/dist/types/raw/composable/table/panelcfg/x/types.gen';
import type {
  FieldConfig as RawTimeSeriesFieldConfig,
  Options as RawTimeSeriesOptions,
} from '@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen';

export type { Dashboard };
export type StatOptions = Partial<RawStatOptions>;
export type TableOptions = Partial<RawTableOptions>;
export type TableFieldConfig = Partial<RawTableFieldConfig>;
export type TimeSeriesOptions = Partial<RawTimeSeriesOptions>;
export type TimeSeriesFieldConfig = Partial<RawTimeSeriesFieldConfig>;

/**
 * A Prometheus panel target. @grafana/schema no longer ships the Prometheus data source types (the plugin moved
 * out of the package), so this mirrors the fields of Grafana's prometheus `dataquery.cue` that these dashboards
 * use, on top of the common DataQuery from @grafana/schema.
 */
export interface PrometheusQuery extends DataQuery {
  /** The PromQL expression. */
  expr: string;
  /** Legend template, e.g. "{{list}}". */
  legendFormat?: string;
  /** Evaluate at the end of the range only. */
  instant?: boolean;
  /** Evaluate over the whole range. */
  range?: boolean;
  /** How the result is shaped for the panel. */
  format?: 'time_series' | 'table' | 'heatmap';
  /** Minimum step, e.g. "15s". */
  interval?: string;
  /** Query editor that last edited the query. */
  editorMode?: 'code' | 'builder';
  /** Fetch exemplars. */
  exemplar?: boolean;
}

/** Root of the generated file: one definition per type above (the test validates against each definition). */
export interface AmlGrafanaSchemas {
  dashboard: Dashboard;
  prometheusQuery: PrometheusQuery;
  statOptions: StatOptions;
  tableOptions: TableOptions;
  tableFieldConfig: TableFieldConfig;
  timeSeriesOptions: TimeSeriesOptions;
  timeSeriesFieldConfig: TimeSeriesFieldConfig;
}
