-- wrk posts one fixed claim body (from $CLAIM_BODY): raw HTTP ceiling, no HMAC, no checks.
wrk.method = "POST"
wrk.body = os.getenv("CLAIM_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "ESP32-TeddyBear/5.0.3"
