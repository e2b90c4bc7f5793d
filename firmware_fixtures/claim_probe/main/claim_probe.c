/*
 * claim_probe.c - test firmware for the teddy claim harness (ESP-IDF 5.x, ESP32).
 *
 * It holds its identity the way v5 firmware does (device ID = Wi-Fi MAC in
 * upper-case hex, OOB secret derived from it with the shared C signer core),
 * keeps printing ordinary ESP-IDF log lines, and answers the claim-probe frame
 * protocol on UART0 (see probe_frames.h and harness/hil/frames.py):
 *
 *   {"id":N,"cmd":"ping"}                          -> uptime_ms
 *   {"id":N,"cmd":"identity"}                      -> device_id, mac, fw, project,
 *                                                     hmac_mode, elf_sha256
 *   {"id":N,"cmd":"sign","child_id":C[,"nonce":H]} -> device_id, child_id, nonce,
 *                                                     hmac_hex, body
 *   {"id":N,"cmd":"claim","url":U,"child_id":C}    -> status, correlation_id, nonce, body
 *   {"id":N,"cmd":"reset"}                         -> reboots (esp_restart)
 *   {"id":N,"cmd":"download"}                      -> error on ESP32: its ROM has no
 *                                                     software entry to download mode;
 *                                                     use DTR/RTS (esptool default-reset)
 *
 * Every line (logs and frames) leaves through one mutex-guarded writer, so a
 * log line can never land inside a frame.
 *
 * Not built in CI (no Xtensa toolchain there); probe_frames.c is built and
 * tested on the host.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cJSON.h"
#include "driver/uart.h"
#include "esp_app_desc.h"
#include "esp_event.h"
#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_netif.h"
#include "esp_random.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "nvs_flash.h"

#include "claim_signer.h"
#include "probe_frames.h"

#define TAG "claim_probe"
#define UART_PORT UART_NUM_0
#define CLAIM_PATH "/api/v1/pair/claim"
#define HTTP_BODY_MAX 4096
#define WIFI_CONNECTED_BIT BIT0

#ifdef CONFIG_CLAIM_PROBE_HMAC_NORMALIZED
#define HMAC_MODE CLAIM_MODE_NORMALIZED
#define HMAC_MODE_NAME "normalized"
#else
#define HMAC_MODE CLAIM_MODE_LEGACY
#define HMAC_MODE_NAME "legacy"
#endif

static SemaphoreHandle_t s_out_lock;
static EventGroupHandle_t s_wifi_events;
static char s_device_id[13];
static char s_mac_text[18];
static unsigned char s_oob[CLAIM_OOB_BYTES];
static const esp_app_desc_t *s_app;

/* ---- output: one writer for logs and frames ------------------------------------------- */

static void write_locked(const char *data, size_t len)
{
    xSemaphoreTake(s_out_lock, portMAX_DELAY);
    uart_write_bytes(UART_PORT, data, len);
    xSemaphoreGive(s_out_lock);
}

static int log_vprintf(const char *fmt, va_list args)
{
    char line[256];
    int n = vsnprintf(line, sizeof line, fmt, args);
    if (n < 0) {
        return n;
    }
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
    }
    write_locked(line, (size_t)n);
    return n;
}

static void send_frame(cJSON *payload)
{
    static char framed[PROBE_MAX_LINE + 16];
    char *json = cJSON_PrintUnformatted(payload);
    int n;
    if (json == NULL) {
        return;
    }
    xSemaphoreTake(s_out_lock, portMAX_DELAY);
    n = probe_frame_encode(json, strlen(json), framed, sizeof framed);
    if (n > 0) {
        uart_write_bytes(UART_PORT, framed, (size_t)n);
    }
    xSemaphoreGive(s_out_lock);
    cJSON_free(json);
}

static void reply_error(cJSON *id, const char *message)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "id", cJSON_Duplicate(id, 1));
    cJSON_AddBoolToObject(out, "ok", 0);
    cJSON_AddStringToObject(out, "error", message);
    send_frame(out);
    cJSON_Delete(out);
}

static cJSON *reply_ok(cJSON *id)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "id", cJSON_Duplicate(id, 1));
    cJSON_AddBoolToObject(out, "ok", 1);
    return out;
}

/* ---- identity and signing ------------------------------------------------------------- */

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0xF];
    }
    out[2 * n] = '\0';
}

static void init_identity(void)
{
    uint8_t mac[6];
    char oob_hex[CLAIM_HEX_OUT];
    ESP_ERROR_CHECK(esp_read_mac(mac, ESP_MAC_WIFI_STA));
    /* v5: the MAC without separators, upper-case. */
    snprintf(s_device_id, sizeof s_device_id, "%02X%02X%02X%02X%02X%02X", mac[0], mac[1], mac[2],
             mac[3], mac[4], mac[5]);
    snprintf(s_mac_text, sizeof s_mac_text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
             mac[2], mac[3], mac[4], mac[5]);
    if (claim_derive_oob(s_device_id, oob_hex) != CLAIM_OK ||
        claim_hex_to_bytes(oob_hex, s_oob, CLAIM_OOB_BYTES) != CLAIM_OK) {
        ESP_LOGE(TAG, "OOB derivation failed");
        abort();
    }
    memset(oob_hex, 0, sizeof oob_hex);
    s_app = esp_app_get_description();
}

/* Signs one claim; fills nonce (given or from esp_random) and hmac. 0 or a claim_signer code. */
static int sign_claim(const char *child_id, const char *nonce_in, char nonce[65],
                      char hmac[CLAIM_HEX_OUT])
{
    if (nonce_in != NULL) {
        if (strlen(nonce_in) > 64) {
            return CLAIM_ERR_NONCE_LONG;
        }
        strcpy(nonce, nonce_in);
    } else {
        unsigned char raw[16];
        esp_fill_random(raw, sizeof raw);
        to_hex(raw, sizeof raw, nonce);
    }
    return claim_sign(s_device_id, child_id, nonce, s_oob, HMAC_MODE, hmac);
}

/* The body exactly as the firmware POSTs it: compact JSON in this key order. */
static char *claim_body(const char *child_id, const char *nonce, const char *hmac)
{
    cJSON *body = cJSON_CreateObject();
    char *text;
    cJSON_AddStringToObject(body, "device_id", s_device_id);
    cJSON_AddStringToObject(body, "child_id", child_id);
    cJSON_AddStringToObject(body, "nonce", nonce);
    cJSON_AddStringToObject(body, "hmac_hex", hmac);
    cJSON_AddStringToObject(body, "firmware_version", s_app->version);
    text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    return text;
}

/* ---- HTTP claim over Wi-Fi ------------------------------------------------------------- */

typedef struct {
    char body[HTTP_BODY_MAX];
    size_t len;
    char correlation_id[64];
} http_capture_t;

static esp_err_t http_event(esp_http_client_event_t *evt)
{
    http_capture_t *cap = (http_capture_t *)evt->user_data;
    if (evt->event_id == HTTP_EVENT_ON_HEADER &&
        strcasecmp(evt->header_key, "X-Correlation-Id") == 0) {
        strlcpy(cap->correlation_id, evt->header_value, sizeof cap->correlation_id);
    } else if (evt->event_id == HTTP_EVENT_ON_DATA) {
        size_t room = sizeof cap->body - 1 - cap->len;
        size_t n = (size_t)evt->data_len < room ? (size_t)evt->data_len : room;
        memcpy(cap->body + cap->len, evt->data, n);
        cap->len += n;
        cap->body[cap->len] = '\0';
    }
    return ESP_OK;
}

static void cmd_claim(cJSON *id, const char *base_url, const char *child_id)
{
    static http_capture_t cap;
    char url[256], nonce[65], hmac[CLAIM_HEX_OUT], agent[64];
    char *body;
    int rc, status;
    esp_err_t err;
    cJSON *out, *parsed;

    if ((xEventGroupGetBits(s_wifi_events) & WIFI_CONNECTED_BIT) == 0) {
        reply_error(id, "wifi: not connected");
        return;
    }
    rc = sign_claim(child_id, NULL, nonce, hmac);
    if (rc != CLAIM_OK) {
        reply_error(id, claim_strerror(rc));
        return;
    }
    body = claim_body(child_id, nonce, hmac);
    snprintf(url, sizeof url, "%s%s", base_url, CLAIM_PATH);
    snprintf(agent, sizeof agent, "ESP32-TeddyBear/%s", s_app->version);
    memset(&cap, 0, sizeof cap);
    esp_http_client_config_t config = {
        .url = url,
        .method = HTTP_METHOD_POST,
        .timeout_ms = 10000,
        .user_agent = agent,
        .event_handler = http_event,
        .user_data = &cap,
    };
    esp_http_client_handle_t client = esp_http_client_init(&config);
    esp_http_client_set_header(client, "Content-Type", "application/json");
    esp_http_client_set_post_field(client, body, (int)strlen(body));
    err = esp_http_client_perform(client);
    status = esp_http_client_get_status_code(client);
    esp_http_client_cleanup(client);
    cJSON_free(body);
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "claim failed: %s", esp_err_to_name(err));
        reply_error(id, esp_err_to_name(err));
        return;
    }
    ESP_LOGI(TAG, "claim -> HTTP %d", status);
    out = reply_ok(id);
    cJSON_AddNumberToObject(out, "status", status);
    cJSON_AddStringToObject(out, "correlation_id", cap.correlation_id);
    cJSON_AddStringToObject(out, "nonce", nonce);
    parsed = cJSON_Parse(cap.body);
    if (parsed != NULL) {
        cJSON_AddItemToObject(out, "body", parsed);
    } else {
        cJSON_AddStringToObject(out, "body", cap.body);
    }
    send_frame(out);
    cJSON_Delete(out);
}

/* ---- the frame protocol ----------------------------------------------------------------- */

static void handle_request(cJSON *req)
{
    cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
    const cJSON *child = cJSON_GetObjectItemCaseSensitive(req, "child_id");
    const cJSON *nonce_in = cJSON_GetObjectItemCaseSensitive(req, "nonce");
    cJSON *out;

    if (!cJSON_IsString(cmd)) {
        ESP_LOGW(TAG, "frame without cmd ignored");
        return;
    }
    if (strcmp(cmd->valuestring, "ping") == 0) {
        out = reply_ok(id);
        cJSON_AddNumberToObject(out, "uptime_ms", (double)(esp_timer_get_time() / 1000));
    } else if (strcmp(cmd->valuestring, "identity") == 0) {
        char elf[65];
        to_hex(s_app->app_elf_sha256, 32, elf);
        out = reply_ok(id);
        cJSON_AddStringToObject(out, "device_id", s_device_id);
        cJSON_AddStringToObject(out, "mac", s_mac_text);
        cJSON_AddStringToObject(out, "fw", s_app->version);
        cJSON_AddStringToObject(out, "project", s_app->project_name);
        cJSON_AddStringToObject(out, "hmac_mode", HMAC_MODE_NAME);
        cJSON_AddStringToObject(out, "elf_sha256", elf);
    } else if (strcmp(cmd->valuestring, "sign") == 0) {
        char nonce[65], hmac[CLAIM_HEX_OUT];
        char *body;
        int rc;
        if (!cJSON_IsString(child) || child->valuestring[0] == '\0') {
            reply_error(id, "child_id: required (a string)");
            return;
        }
        if (nonce_in != NULL && !cJSON_IsString(nonce_in)) {
            reply_error(id, "nonce: must be a hex string");
            return;
        }
        rc = sign_claim(child->valuestring, nonce_in ? nonce_in->valuestring : NULL, nonce, hmac);
        if (rc != CLAIM_OK) {
            reply_error(id, claim_strerror(rc));
            return;
        }
        body = claim_body(child->valuestring, nonce, hmac);
        ESP_LOGI(TAG, "signed claim");
        out = reply_ok(id);
        cJSON_AddStringToObject(out, "device_id", s_device_id);
        cJSON_AddStringToObject(out, "child_id", child->valuestring);
        cJSON_AddStringToObject(out, "nonce", nonce);
        cJSON_AddStringToObject(out, "hmac_hex", hmac);
        cJSON_AddStringToObject(out, "body", body);
        cJSON_free(body);
    } else if (strcmp(cmd->valuestring, "claim") == 0) {
        const cJSON *url = cJSON_GetObjectItemCaseSensitive(req, "url");
        if (!cJSON_IsString(url) || strncmp(url->valuestring, "http", 4) != 0) {
            reply_error(id, "url: required: the server's base URL (http://...)");
        } else if (!cJSON_IsString(child) || child->valuestring[0] == '\0') {
            reply_error(id, "child_id: required (a string)");
        } else {
            cmd_claim(id, url->valuestring, child->valuestring);
        }
        return;
    } else if (strcmp(cmd->valuestring, "reset") == 0) {
        out = reply_ok(id);
        send_frame(out);
        cJSON_Delete(out);
        ESP_LOGI(TAG, "restarting");
        uart_wait_tx_done(UART_PORT, pdMS_TO_TICKS(100));
        esp_restart();
        return;
    } else if (strcmp(cmd->valuestring, "download") == 0) {
        reply_error(id, "download: not possible from software on ESP32; reset with IO0 low "
                        "(DTR/RTS, esptool --before default-reset)");
        return;
    } else {
        char message[80];
        snprintf(message, sizeof message, "unknown command '%.40s'", cmd->valuestring);
        reply_error(id, message);
        return;
    }
    send_frame(out);
    cJSON_Delete(out);
}

static void uart_task(void *arg)
{
    static probe_line_t line;
    uint8_t chunk[128];
    (void)arg;
    probe_line_init(&line);
    for (;;) {
        int n = uart_read_bytes(UART_PORT, chunk, sizeof chunk, pdMS_TO_TICKS(50));
        int i;
        for (i = 0; i < n; i++) {
            const char *json;
            size_t json_len;
            cJSON *req;
            if (!probe_line_feed(&line, (char)chunk[i])) {
                continue;
            }
            if (probe_frame_decode(line.buf, line.len, &json, &json_len) != PROBE_FRAME_OK) {
                if (line.len > 0) {
                    ESP_LOGW(TAG, "ignored non-frame input");
                }
                continue;
            }
            req = cJSON_ParseWithLength(json, json_len);
            if (req == NULL) {
                ESP_LOGW(TAG, "frame with bad JSON ignored");
                continue;
            }
            handle_request(req);
            cJSON_Delete(req);
        }
    }
}

/* ---- Wi-Fi ------------------------------------------------------------------------------ */

static void wifi_event(void *arg, esp_event_base_t base, int32_t event_id, void *data)
{
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && event_id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && event_id == WIFI_EVENT_STA_DISCONNECTED) {
        xEventGroupClearBits(s_wifi_events, WIFI_CONNECTED_BIT);
        esp_wifi_connect();
    } else if (base == IP_EVENT && event_id == IP_EVENT_STA_GOT_IP) {
        ESP_LOGI("wifi", "connected");
        xEventGroupSetBits(s_wifi_events, WIFI_CONNECTED_BIT);
    }
}

static void start_wifi(void)
{
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    wifi_config_t config = {0};
    s_wifi_events = xEventGroupCreate();
    if (strlen(CONFIG_CLAIM_PROBE_WIFI_SSID) == 0) {
        ESP_LOGW("wifi", "no network configured");
        return;
    }
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(
        esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, wifi_event, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, wifi_event, NULL));
    strlcpy((char *)config.sta.ssid, CONFIG_CLAIM_PROBE_WIFI_SSID, sizeof config.sta.ssid);
    strlcpy((char *)config.sta.password, CONFIG_CLAIM_PROBE_WIFI_PASSWORD,
            sizeof config.sta.password);
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &config));
    ESP_ERROR_CHECK(esp_wifi_start());
}

/* ---- main --------------------------------------------------------------------------------- */

void app_main(void)
{
    esp_err_t err = nvs_flash_init();
    cJSON *boot;
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);

    s_out_lock = xSemaphoreCreateMutex();
    ESP_ERROR_CHECK(uart_driver_install(UART_PORT, 2048, 0, 0, NULL, 0));
    esp_log_set_vprintf(log_vprintf);

    init_identity();
    ESP_LOGI(TAG, "claim probe up, hmac_mode=%s", HMAC_MODE_NAME);
    start_wifi();

    boot = cJSON_CreateObject();
    cJSON_AddStringToObject(boot, "event", "boot");
    cJSON_AddStringToObject(boot, "fw", s_app->version);
    cJSON_AddStringToObject(boot, "project", s_app->project_name);
    cJSON_AddStringToObject(boot, "device_id", s_device_id);
    cJSON_AddStringToObject(boot, "hmac_mode", HMAC_MODE_NAME);
    cJSON_AddStringToObject(boot, "reset_reason",
                            esp_reset_reason() == ESP_RST_SW ? "SW_RESET" : "POWERON_RESET");
    send_frame(boot);
    cJSON_Delete(boot);

    xTaskCreate(uart_task, "claim_probe_uart", 8192, NULL, 5, NULL);
    for (;;) {
        vTaskDelay(pdMS_TO_TICKS(CONFIG_CLAIM_PROBE_HEARTBEAT_MS));
        ESP_LOGI(TAG, "heartbeat uptime=%llds free_heap=%lu",
                 (long long)(esp_timer_get_time() / 1000000),
                 (unsigned long)esp_get_free_heap_size());
    }
}
