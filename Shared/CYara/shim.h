// Shim for libyara (Debian libyara-dev 4.2). Only SMGYara imports this module
// (`internal import CYara`). YR_RULE's identifier sits in an anonymous union that Swift does not
// read reliably, so a helper returns it.
#ifndef SMG_CYARA_SHIM_H
#define SMG_CYARA_SHIM_H
#include <yara.h>

static inline const char *smg_yr_rule_identifier(const void *message_data) {
    return ((const YR_RULE *)message_data)->identifier;
}

/// The value of the string meta `name` of a rule, or NULL.
static inline const char *smg_yr_rule_meta_string(const void *message_data, const char *name) {
    const YR_RULE *rule = (const YR_RULE *)message_data;
    const YR_META *meta;
    yr_rule_metas_foreach(rule, meta) {
        if (meta->type == META_TYPE_STRING && strcmp(meta->identifier, name) == 0) return meta->string;
    }
    return NULL;
}
#endif
