/*
 * log.h: leveled logging to stderr with timestamps.
 *
 * The level is process configuration, set once by main() from flags or
 * SDC_LOG_LEVEL; library code only calls sdc_log().
 */
#ifndef SDC_LOG_H
#define SDC_LOG_H

typedef enum {
    SDC_LOG_DEBUG = 0,
    SDC_LOG_INFO,
    SDC_LOG_WARN,
    SDC_LOG_ERROR,
    SDC_LOG_SILENT
} sdc_log_level_t;

void sdc_log_set_level(sdc_log_level_t level);
sdc_log_level_t sdc_log_get_level(void);
/* Parses "debug" | "info" | "warn" | "error" | "silent"; returns -1 if unknown. */
int sdc_log_parse_level(const char *name);
/* Reads SDC_LOG_LEVEL from the environment if set and valid. */
void sdc_log_init_from_env(void);

void sdc_log(sdc_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SDC_DEBUG(...) sdc_log(SDC_LOG_DEBUG, __VA_ARGS__)
#define SDC_INFO(...) sdc_log(SDC_LOG_INFO, __VA_ARGS__)
#define SDC_WARN(...) sdc_log(SDC_LOG_WARN, __VA_ARGS__)
#define SDC_ERROR(...) sdc_log(SDC_LOG_ERROR, __VA_ARGS__)

#endif
