--
-- PostgreSQL database dump
--

\restrict CTS0Y3zn3bVpfGEboBzpD3NHJn6Wb2nlixyDhOH4mZPjQ9x5Abkf4f886r9BJBN

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: threadline_fence_v1(text, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.threadline_fence_v1(p_thread_key text, p_token uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM 1 FROM threadline_thread_holders
            WHERE thread_key = p_thread_key AND token = p_token FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'thread % is no longer held by this turn', p_thread_key
                USING ERRCODE = 'TL409',
                      HINT = 'taken over after this process lost its owner session, or the database restarted';
        END IF;
    END $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: checkpoint_blobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_blobs (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    channel text NOT NULL,
    version text NOT NULL,
    type text NOT NULL,
    blob bytea
);


--
-- Name: checkpoint_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_migrations (
    v integer NOT NULL
);


--
-- Name: checkpoint_writes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_writes (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    checkpoint_id text NOT NULL,
    task_id text NOT NULL,
    idx integer NOT NULL,
    channel text NOT NULL,
    type text,
    blob bytea NOT NULL,
    task_path text DEFAULT ''::text NOT NULL
);


--
-- Name: checkpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoints (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    checkpoint_id text NOT NULL,
    parent_checkpoint_id text,
    type text,
    checkpoint jsonb NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL
);


--
-- Name: threadline_thread_holders; Type: TABLE; Schema: public; Owner: -
--

CREATE UNLOGGED TABLE public.threadline_thread_holders (
    thread_key text NOT NULL,
    owner_key bigint NOT NULL,
    token uuid NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: threadline_threads; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.threadline_threads (
    tenant text NOT NULL,
    thread_id text NOT NULL,
    title bytea NOT NULL,
    turn_count integer NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    head_checkpoint_id text NOT NULL
);


--
-- Data for Name: checkpoint_blobs; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) FROM stdin;
default/golden		__start__	00000000000000000000000000000001.0.671050402591249	msgpack	\\x81a86d6573736167657391c7b90594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74af4d79206e616d65206973204164612eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92431623633373563642d363865372d353834632d396231312d326632383834306535326633b36d6f64656c5f76616c69646174655f6a736f6e
default/golden		__start__	00000000000000000000000000000004.0.6522048854303548	msgpack	\\x81a86d6573736167657391c7b60594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74ac5768617420697320362a373fb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92439613139343364612d633562342d353765382d626532652d333438666262633638356164b36d6f64656c5f76616c69646174655f6a736f6e
default/golden		__start__	00000000000000000000000000000004.0.284621498112712	msgpack	\\x81a86d6573736167657391c7bb0594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74b14d79206e616d652069732047726163652eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92439356239366130622d653130362d353362362d393164632d363234363836363232656232b36d6f64656c5f76616c69646174655f6a736f6e
default/nul-thread		__start__	00000000000000000000000000000001.0.16637909704673748	msgpack	\\x81a86d6573736167657391c7b60594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74ac6e756c200020696e73696465b16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92432376135316165622d626231352d356334392d613462312d373231623264316631623831b36d6f64656c5f76616c69646174655f6a736f6e
\.


--
-- Data for Name: checkpoint_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.checkpoint_migrations (v) FROM stdin;
0
1
2
3
4
5
6
7
8
9
\.


--
-- Data for Name: checkpoint_writes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path) FROM stdin;
default/golden		1f1f0da3-efcd-667a-bfff-a8c28f8db83a	51430d6b-28ee-5fb6-aaa3-b1bf4fe10292	0	messages	msgpack	\\x91c7b90594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74af4d79206e616d65206973204164612eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92431623633373563642d363865372d353834632d396231312d326632383834306535326633b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, __start__
default/golden		1f1f0da3-efcd-667a-bfff-a8c28f8db83a	51430d6b-28ee-5fb6-aaa3-b1bf4fe10292	1	branch:to:agent	null	\\x	~__pregel_pull, __start__
default/golden		1f1f0da3-efcf-66c9-8000-b6cc9512e4bd	738697f8-5772-0e3c-cebf-02c25f9270c9	0	messages	msgpack	\\x91c7f30594ba6c616e67636861696e5f636f72652e6d657373616765732e6169a941494d65737361676589a7636f6e74656e74b84e6f7465643a20796f7572206e616d65206973204164612eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a26169a46e616d65c0a26964d92e6c635f72756e2d2d30316132343737612d633361662d373464662d396366322d3262316161383339303037392d30aa746f6f6c5f63616c6c7390b2696e76616c69645f746f6f6c5f63616c6c7390ae75736167655f6d65746164617461c0b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, agent
default/golden		1f1f0da3-eff5-64d9-8002-7cb74ae9d74b	2feb1883-810f-3b6c-8bc9-a7a9b04314b4	0	messages	msgpack	\\x91c7b60594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74ac5768617420697320362a373fb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92439613139343364612d633562342d353765382d626532652d333438666262633638356164b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, __start__
default/golden		1f1f0da3-eff5-64d9-8002-7cb74ae9d74b	2feb1883-810f-3b6c-8bc9-a7a9b04314b4	1	branch:to:agent	null	\\x	~__pregel_pull, __start__
default/golden		1f1f0da3-eff7-6c96-8003-22ecfa704a25	f830ec9a-c851-0437-c56a-87d51b2994f4	0	messages	msgpack	\\x91c801270594ba6c616e67636861696e5f636f72652e6d657373616765732e6169a941494d65737361676589a7636f6e74656e74a0b16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a26169a46e616d65c0a26964d92c6c635f72756e2d2d30316132343737612d633362662d373231352d623464652d366365396434343339313262aa746f6f6c5f63616c6c739184a46e616d65aa63616c63756c61746f72a46172677381aa65787072657373696f6ea3362a37a26964b563616c6c5f38396438383962633937386262383061a474797065a9746f6f6c5f63616c6cb2696e76616c69645f746f6f6c5f63616c6c7390ae75736167655f6d65746164617461c0b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, agent
default/golden		1f1f0da3-eff7-6c96-8003-22ecfa704a25	f830ec9a-c851-0437-c56a-87d51b2994f4	1	branch:to:tools	null	\\x	~__pregel_pull, agent
default/golden		1f1f0da3-effc-6519-8004-a3468e20db22	5bcf4379-5ef8-1afd-1105-b7aecfba2d01	0	messages	msgpack	\\x91c7ef0594bc6c616e67636861696e5f636f72652e6d657373616765732e746f6f6cab546f6f6c4d65737361676589a7636f6e74656e74a23432b16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a4746f6f6ca46e616d65aa63616c63756c61746f72a26964d92430616431396161622d386533352d346438662d396366362d646535386532373962613335ac746f6f6c5f63616c6c5f6964b563616c6c5f38396438383962633937386262383061a86172746966616374c0a6737461747573a773756363657373b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, tools
default/golden		1f1f0da3-effc-6519-8004-a3468e20db22	5bcf4379-5ef8-1afd-1105-b7aecfba2d01	1	branch:to:agent	null	\\x	~__pregel_pull, tools
default/golden		1f1f0da3-f001-6949-8005-78fcf027454a	97dcc05f-9f5a-f789-2157-c67508ef8858	0	messages	msgpack	\\x91c7ea0594ba6c616e67636861696e5f636f72652e6d657373616765732e6169a941494d65737361676589a7636f6e74656e74b154686520616e737765722069732034322eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a26169a46e616d65c0a26964d92c6c635f72756e2d2d30316132343737612d633363332d373030322d623737662d353938393235653862353231aa746f6f6c5f63616c6c7390b2696e76616c69645f746f6f6c5f63616c6c7390ae75736167655f6d65746164617461c0b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, agent
default/golden		1f1f0da3-f020-6994-8002-6ef00fcf1e0b	96088aa5-eeaa-be14-e948-2be028a18acf	0	messages	msgpack	\\x91c7bb0594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74b14d79206e616d652069732047726163652eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92439356239366130622d653130362d353362362d393164632d363234363836363232656232b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, __start__
default/golden		1f1f0da3-f020-6994-8002-6ef00fcf1e0b	96088aa5-eeaa-be14-e948-2be028a18acf	1	branch:to:agent	null	\\x	~__pregel_pull, __start__
default/golden		1f1f0da3-f021-664a-8003-b536350010b7	e48e7049-518c-4cff-3062-af66f18b62f7	0	messages	msgpack	\\x91c7f50594ba6c616e67636861696e5f636f72652e6d657373616765732e6169a941494d65737361676589a7636f6e74656e74ba4e6f7465643a20796f7572206e616d652069732047726163652eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a26169a46e616d65c0a26964d92e6c635f72756e2d2d30316132343737612d633364302d373738382d383538332d3566363734613164353862642d30aa746f6f6c5f63616c6c7390b2696e76616c69645f746f6f6c5f63616c6c7390ae75736167655f6d65746164617461c0b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, agent
default/nul-thread		1f1f0da3-f033-6a73-bfff-ff4f91e17690	a8ffdf1d-3c47-e483-776c-9fe4c6d37f5e	0	messages	msgpack	\\x91c7b60594bd6c616e67636861696e5f636f72652e6d657373616765732e68756d616eac48756d616e4d65737361676586a7636f6e74656e74ac6e756c200020696e73696465b16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a568756d616ea46e616d65c0a26964d92432376135316165622d626231352d356334392d613462312d373231623264316631623831b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, __start__
default/nul-thread		1f1f0da3-f033-6a73-bfff-ff4f91e17690	a8ffdf1d-3c47-e483-776c-9fe4c6d37f5e	1	branch:to:agent	null	\\x	~__pregel_pull, __start__
default/nul-thread		1f1f0da3-f034-649b-8000-4cf71ec52a83	1090fbd7-7684-9a90-46b6-b0374f958691	0	messages	msgpack	\\x91c8014d0594ba6c616e67636861696e5f636f72652e6d657373616765732e6169a941494d65737361676589a7636f6e74656e74d9714920616d20746865206f66666c696e65206d6f64656c20286e6f204f50454e41495f4150495f4b455920697320736574292e20596f7520736169643a20226e756c200020696e73696465222e2054686973207468726561642068656c642030206561726c696572206d657373616765732eb16164646974696f6e616c5f6b776172677380b1726573706f6e73655f6d6574616461746180a474797065a26169a46e616d65c0a26964d92e6c635f72756e2d2d30316132343737612d633364382d373333362d383938632d3837653939636364663966372d30aa746f6f6c5f63616c6c7390b2696e76616c69645f746f6f6c5f63616c6c7390ae75736167655f6d65746164617461c0b36d6f64656c5f76616c69646174655f6a736f6e	~__pregel_pull, agent
\.


--
-- Data for Name: checkpoints; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata) FROM stdin;
default/golden		1f1f0da3-efcd-667a-bfff-a8c28f8db83a	\N	\N	{"v": 4, "id": "1f1f0da3-efcd-667a-bfff-a8c28f8db83a", "ts": "2026-12-05T18:32:37.549008+00:00", "versions_seen": {"__input__": {}}, "channel_values": {}, "channel_versions": {"__start__": "00000000000000000000000000000001.0.671050402591249"}, "updated_channels": ["__start__"]}	{"step": -1, "source": "input", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "golden-ask", "threadline_query_sha256": "d2949b51160ed54b1de406de933cec4e45c5199abfae823f1e9d946d6b899d4f", "counters_since_delta_snapshot": {"messages": [0, 1]}}
default/golden		1f1f0da3-efcf-66c9-8000-b6cc9512e4bd	1f1f0da3-efcd-667a-bfff-a8c28f8db83a	\N	{"v": 4, "id": "1f1f0da3-efcf-66c9-8000-b6cc9512e4bd", "ts": "2026-12-05T18:32:37.549831+00:00", "versions_seen": {"__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.671050402591249"}}, "channel_values": {"branch:to:agent": null}, "channel_versions": {"messages": "00000000000000000000000000000002.0.25955721241142393", "__start__": "00000000000000000000000000000002.0.25955721241142393", "branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "updated_channels": ["branch:to:agent", "messages"]}	{"step": 0, "source": "loop", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "golden-ask", "threadline_query_sha256": "d2949b51160ed54b1de406de933cec4e45c5199abfae823f1e9d946d6b899d4f", "counters_since_delta_snapshot": {"messages": [1, 2]}}
default/golden		1f1f0da3-efd6-6543-8001-90186df3723d	1f1f0da3-efcf-66c9-8000-b6cc9512e4bd	\N	{"v": 4, "id": "1f1f0da3-efd6-6543-8001-90186df3723d", "ts": "2026-12-05T18:32:37.552660+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.671050402591249"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000003.0.5455025941295634", "__start__": "00000000000000000000000000000002.0.25955721241142393", "branch:to:agent": "00000000000000000000000000000003.0.5455025941295634"}, "updated_channels": ["messages"]}	{"step": 1, "source": "loop", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "golden-ask", "threadline_query_sha256": "d2949b51160ed54b1de406de933cec4e45c5199abfae823f1e9d946d6b899d4f", "counters_since_delta_snapshot": {"messages": [2, 3]}}
default/golden		1f1f0da3-eff5-64d9-8002-7cb74ae9d74b	1f1f0da3-efd6-6543-8001-90186df3723d	\N	{"v": 4, "id": "1f1f0da3-eff5-64d9-8002-7cb74ae9d74b", "ts": "2026-12-05T18:32:37.565341+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.671050402591249"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000003.0.5455025941295634", "__start__": "00000000000000000000000000000004.0.6522048854303548", "branch:to:agent": "00000000000000000000000000000003.0.5455025941295634"}, "updated_channels": ["__start__"]}	{"step": 2, "source": "input", "parents": {}, "threadline_rpc": "StreamAsk", "threadline_replica": "vm:10700", "threadline_request_id": "golden-stream", "threadline_query_sha256": "03741edc3b3f57143242d703d4bd1a755743659d6423134c2d532c68aa7dac2c", "counters_since_delta_snapshot": {"messages": [2, 4]}}
default/golden		1f1f0da3-eff7-6c96-8003-22ecfa704a25	1f1f0da3-eff5-64d9-8002-7cb74ae9d74b	\N	{"v": 4, "id": "1f1f0da3-eff7-6c96-8003-22ecfa704a25", "ts": "2026-12-05T18:32:37.566363+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.6522048854303548"}}, "channel_values": {"branch:to:agent": null}, "channel_versions": {"messages": "00000000000000000000000000000005.0.4084988289657445", "__start__": "00000000000000000000000000000005.0.4084988289657445", "branch:to:agent": "00000000000000000000000000000005.0.4084988289657445"}, "updated_channels": ["branch:to:agent", "messages"]}	{"step": 3, "source": "loop", "parents": {}, "threadline_rpc": "StreamAsk", "threadline_replica": "vm:10700", "threadline_request_id": "golden-stream", "threadline_query_sha256": "03741edc3b3f57143242d703d4bd1a755743659d6423134c2d532c68aa7dac2c", "counters_since_delta_snapshot": {"messages": [3, 5]}}
default/golden		1f1f0da3-effc-6519-8004-a3468e20db22	1f1f0da3-eff7-6c96-8003-22ecfa704a25	\N	{"v": 4, "id": "1f1f0da3-effc-6519-8004-a3468e20db22", "ts": "2026-12-05T18:32:37.568223+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000005.0.4084988289657445"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.6522048854303548"}}, "channel_values": {"branch:to:tools": null}, "channel_versions": {"messages": "00000000000000000000000000000006.0.24616470138216817", "__start__": "00000000000000000000000000000005.0.4084988289657445", "branch:to:agent": "00000000000000000000000000000006.0.24616470138216817", "branch:to:tools": "00000000000000000000000000000006.0.24616470138216817"}, "updated_channels": ["branch:to:tools", "messages"]}	{"step": 4, "source": "loop", "parents": {}, "threadline_rpc": "StreamAsk", "threadline_replica": "vm:10700", "threadline_request_id": "golden-stream", "threadline_query_sha256": "03741edc3b3f57143242d703d4bd1a755743659d6423134c2d532c68aa7dac2c", "counters_since_delta_snapshot": {"messages": [4, 6]}}
default/golden		1f1f0da3-f001-6949-8005-78fcf027454a	1f1f0da3-effc-6519-8004-a3468e20db22	\N	{"v": 4, "id": "1f1f0da3-f001-6949-8005-78fcf027454a", "ts": "2026-12-05T18:32:37.570376+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000005.0.4084988289657445"}, "tools": {"branch:to:tools": "00000000000000000000000000000006.0.24616470138216817"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.6522048854303548"}}, "channel_values": {"branch:to:agent": null}, "channel_versions": {"messages": "00000000000000000000000000000007.0.3232657631942417", "__start__": "00000000000000000000000000000005.0.4084988289657445", "branch:to:agent": "00000000000000000000000000000007.0.3232657631942417", "branch:to:tools": "00000000000000000000000000000007.0.3232657631942417"}, "updated_channels": ["branch:to:agent", "messages"]}	{"step": 5, "source": "loop", "parents": {}, "threadline_rpc": "StreamAsk", "threadline_replica": "vm:10700", "threadline_request_id": "golden-stream", "threadline_query_sha256": "03741edc3b3f57143242d703d4bd1a755743659d6423134c2d532c68aa7dac2c", "counters_since_delta_snapshot": {"messages": [5, 7]}}
default/golden		1f1f0da3-f007-67fd-8006-ae065876b612	1f1f0da3-f001-6949-8005-78fcf027454a	\N	{"v": 4, "id": "1f1f0da3-f007-67fd-8006-ae065876b612", "ts": "2026-12-05T18:32:37.572801+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000007.0.3232657631942417"}, "tools": {"branch:to:tools": "00000000000000000000000000000006.0.24616470138216817"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.6522048854303548"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000008.0.793548747380853", "__start__": "00000000000000000000000000000005.0.4084988289657445", "branch:to:agent": "00000000000000000000000000000008.0.793548747380853", "branch:to:tools": "00000000000000000000000000000007.0.3232657631942417"}, "updated_channels": ["messages"]}	{"step": 6, "source": "loop", "parents": {}, "threadline_rpc": "StreamAsk", "threadline_replica": "vm:10700", "threadline_request_id": "golden-stream", "threadline_query_sha256": "03741edc3b3f57143242d703d4bd1a755743659d6423134c2d532c68aa7dac2c", "counters_since_delta_snapshot": {"messages": [6, 8]}}
default/nul-thread		1f1f0da3-f033-6a73-bfff-ff4f91e17690	\N	\N	{"v": 4, "id": "1f1f0da3-f033-6a73-bfff-ff4f91e17690", "ts": "2026-12-05T18:32:37.590893+00:00", "versions_seen": {"__input__": {}}, "channel_values": {}, "channel_versions": {"__start__": "00000000000000000000000000000001.0.16637909704673748"}, "updated_channels": ["__start__"]}	{"step": -1, "source": "input", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "nul-ask", "threadline_query_sha256": "0f3ec425dfce373155c5b8efe9ab3353281442b283cb4e7c2365747b17020013", "counters_since_delta_snapshot": {"messages": [0, 1]}}
default/nul-thread		1f1f0da3-f034-649b-8000-4cf71ec52a83	1f1f0da3-f033-6a73-bfff-ff4f91e17690	\N	{"v": 4, "id": "1f1f0da3-f034-649b-8000-4cf71ec52a83", "ts": "2026-12-05T18:32:37.591153+00:00", "versions_seen": {"__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.16637909704673748"}}, "channel_values": {"branch:to:agent": null}, "channel_versions": {"messages": "00000000000000000000000000000002.0.034009584586874864", "__start__": "00000000000000000000000000000002.0.034009584586874864", "branch:to:agent": "00000000000000000000000000000002.0.034009584586874864"}, "updated_channels": ["branch:to:agent", "messages"]}	{"step": 0, "source": "loop", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "nul-ask", "threadline_query_sha256": "0f3ec425dfce373155c5b8efe9ab3353281442b283cb4e7c2365747b17020013", "counters_since_delta_snapshot": {"messages": [1, 2]}}
default/nul-thread		1f1f0da3-f038-6f87-8001-c5564fcb2063	1f1f0da3-f034-649b-8000-4cf71ec52a83	\N	{"v": 4, "id": "1f1f0da3-f038-6f87-8001-c5564fcb2063", "ts": "2026-12-05T18:32:37.593064+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.034009584586874864"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.16637909704673748"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000003.0.7992963917005889", "__start__": "00000000000000000000000000000002.0.034009584586874864", "branch:to:agent": "00000000000000000000000000000003.0.7992963917005889"}, "updated_channels": ["messages"]}	{"step": 1, "source": "loop", "parents": {}, "threadline_rpc": "Ask", "threadline_replica": "vm:10700", "threadline_request_id": "nul-ask", "threadline_query_sha256": "0f3ec425dfce373155c5b8efe9ab3353281442b283cb4e7c2365747b17020013", "counters_since_delta_snapshot": {"messages": [2, 3]}}
default/golden		1f1f0da3-f020-6994-8002-6ef00fcf1e0b	1f1f0da3-efd6-6543-8001-90186df3723d	\N	{"v": 4, "id": "1f1f0da3-f020-6994-8002-6ef00fcf1e0b", "ts": "2026-12-05T18:32:37.583081+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000001.0.671050402591249"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000003.0.5455025941295634", "__start__": "00000000000000000000000000000004.0.284621498112712", "branch:to:agent": "00000000000000000000000000000003.0.5455025941295634"}, "updated_channels": ["__start__"]}	{"step": 2, "source": "input", "parents": {}, "threadline_rpc": "Fork", "threadline_replica": "vm:10700", "threadline_request_id": "golden-fork", "threadline_query_sha256": "735ceaa83d292dc7c729624772cf5e32b3e5e9915883d0ac39ed25dda970706f", "counters_since_delta_snapshot": {"messages": [2, 4]}}
default/golden		1f1f0da3-f021-664a-8003-b536350010b7	1f1f0da3-f020-6994-8002-6ef00fcf1e0b	\N	{"v": 4, "id": "1f1f0da3-f021-664a-8003-b536350010b7", "ts": "2026-12-05T18:32:37.583412+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000002.0.25955721241142393"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.284621498112712"}}, "channel_values": {"branch:to:agent": null}, "channel_versions": {"messages": "00000000000000000000000000000005.0.5993500045464853", "__start__": "00000000000000000000000000000005.0.5993500045464853", "branch:to:agent": "00000000000000000000000000000005.0.5993500045464853"}, "updated_channels": ["branch:to:agent", "messages"]}	{"step": 3, "source": "loop", "parents": {}, "threadline_rpc": "Fork", "threadline_replica": "vm:10700", "threadline_request_id": "golden-fork", "threadline_query_sha256": "735ceaa83d292dc7c729624772cf5e32b3e5e9915883d0ac39ed25dda970706f", "counters_since_delta_snapshot": {"messages": [3, 5]}}
default/golden		1f1f0da3-f025-6a12-8004-d76c3b078941	1f1f0da3-f021-664a-8003-b536350010b7	\N	{"v": 4, "id": "1f1f0da3-f025-6a12-8004-d76c3b078941", "ts": "2026-12-05T18:32:37.585143+00:00", "versions_seen": {"agent": {"branch:to:agent": "00000000000000000000000000000005.0.5993500045464853"}, "__input__": {}, "__start__": {"__start__": "00000000000000000000000000000004.0.284621498112712"}}, "channel_values": {}, "channel_versions": {"messages": "00000000000000000000000000000006.0.5362198944901493", "__start__": "00000000000000000000000000000005.0.5993500045464853", "branch:to:agent": "00000000000000000000000000000006.0.5362198944901493"}, "updated_channels": ["messages"]}	{"step": 4, "source": "loop", "parents": {}, "threadline_rpc": "Fork", "threadline_replica": "vm:10700", "threadline_request_id": "golden-fork", "threadline_query_sha256": "735ceaa83d292dc7c729624772cf5e32b3e5e9915883d0ac39ed25dda970706f", "counters_since_delta_snapshot": {"messages": [4, 6]}}
\.


--
-- Data for Name: threadline_thread_holders; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.threadline_thread_holders (thread_key, owner_key, token, since) FROM stdin;
\.


--
-- Data for Name: threadline_threads; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.threadline_threads (tenant, thread_id, title, turn_count, created_at, updated_at, head_checkpoint_id) FROM stdin;
default	golden	\\x4d79206e616d65206973204164612e	2	2026-12-05 18:32:37.553008+00	2026-12-05 18:32:37.585385+00	1f1f0da3-f025-6a12-8004-d76c3b078941
default	nul-thread	\\x6e756c200020696e73696465	1	2026-12-05 18:32:37.593307+00	2026-12-05 18:32:37.593307+00	1f1f0da3-f038-6f87-8001-c5564fcb2063
\.


--
-- Name: checkpoint_blobs checkpoint_blobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_blobs
    ADD CONSTRAINT checkpoint_blobs_pkey PRIMARY KEY (thread_id, checkpoint_ns, channel, version);


--
-- Name: checkpoint_migrations checkpoint_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_migrations
    ADD CONSTRAINT checkpoint_migrations_pkey PRIMARY KEY (v);


--
-- Name: checkpoint_writes checkpoint_writes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_writes
    ADD CONSTRAINT checkpoint_writes_pkey PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx);


--
-- Name: checkpoints checkpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoints
    ADD CONSTRAINT checkpoints_pkey PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id);


--
-- Name: threadline_thread_holders threadline_thread_holders_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.threadline_thread_holders
    ADD CONSTRAINT threadline_thread_holders_pkey PRIMARY KEY (thread_key);


--
-- Name: threadline_threads threadline_threads_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.threadline_threads
    ADD CONSTRAINT threadline_threads_pkey PRIMARY KEY (tenant, thread_id);


--
-- Name: checkpoint_blobs_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoint_blobs_thread_id_idx ON public.checkpoint_blobs USING btree (thread_id);


--
-- Name: checkpoint_writes_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoint_writes_thread_id_idx ON public.checkpoint_writes USING btree (thread_id);


--
-- Name: checkpoints_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoints_thread_id_idx ON public.checkpoints USING btree (thread_id);


--
-- Name: threadline_checkpoints_by_request_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX threadline_checkpoints_by_request_id ON public.checkpoints USING btree (thread_id, checkpoint_ns, ((metadata ->> 'threadline_request_id'::text)), checkpoint_id) WHERE ((metadata ->> 'threadline_request_id'::text) IS NOT NULL);


--
-- Name: threadline_threads_by_activity; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX threadline_threads_by_activity ON public.threadline_threads USING btree (tenant, updated_at DESC, thread_id);


--
-- PostgreSQL database dump complete
--

\unrestrict CTS0Y3zn3bVpfGEboBzpD3NHJn6Wb2nlixyDhOH4mZPjQ9x5Abkf4f886r9BJBN

