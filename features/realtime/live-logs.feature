@realtime
Feature: People watch runs live, and what they see is the run log
  A team watches its runs as they happen: MeshHook streams every event a run
  commits through Supabase Realtime, and a dashboard that opens late, loses its
  connection or outlives a crash fills in from the run log. Whatever happens to
  workers, the database or the live-log server, what a viewer ends up with is
  exactly the run log: the same events, in the same order, no gaps, nothing
  that was never committed. A viewer sees one project only, and only with a
  valid token for it. (Every other scenario checks this too, after it ends.)

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  @smoke
  Scenario: A viewer watching from the start sees every event as it happens
    Given "Priya" opens the live log of "acme"
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And "Priya" saw every event of the run as it happened

  Scenario: A viewer who opens the live log after the run finished catches up
    Given "acme" has a finished run of "order-sync"
    When "Priya" opens the live log of "acme"
    Then "Priya" sees the run exactly as its run log holds it

  Scenario: Many runs at once reach the viewer complete and in order
    Given "Priya" opens the live log of "acme"
    When "acme" delivers 10 order webhooks to "order-sync"
    Then every run succeeds
    And "Priya" sees every run exactly as its run log holds it

  Scenario Outline: The live log stays whole when the worker dies <moment>
    Given "Priya" opens the live log of "acme"
    And the worker will crash <moment>
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And "Priya" sees the run exactly as its run log holds it

    Examples:
      | moment                                         |
      | after the request of "push" is sent            |
      | while the response of "push" is being recorded |

  Scenario: A batch the database rolled back never reaches the live log
    Given "Priya" opens the live log of "acme"
    And the worker will crash while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And a new worker takes over
    Then the run succeeds
    And "Priya" saw every event of the run as it happened

  Scenario: A viewer whose connection stalls holds no run back
    Given "Priya" opens the live log of "acme"
    And "Priya"'s connection stalls
    When "acme" delivers 10 order webhooks to "order-sync"
    And every run finishes before "Priya" receives any of it
    And "Priya"'s connection recovers
    Then every run succeeds
    And "Priya" sees every run exactly as its run log holds it

  Scenario: The live log stays whole when the database crashes mid-run
    Given "Priya" opens the live log of "acme"
    And the worker will stall after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And the database crashes and restarts
    Then the run succeeds
    And "Priya" sees the run exactly as its run log holds it

  Scenario: Viewers reconnect by themselves when the live-log server restarts
    Given "Priya" opens the live log of "acme"
    And the worker will stall after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And the live-log server restarts
    Then the run succeeds
    And "Priya" sees the run exactly as its run log holds it

  Scenario: A viewer whose token is renewed keeps watching
    Given "Priya" opens the live log of "acme"
    When "Priya"'s token is renewed
    And "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And "Priya" saw every event of the run as it happened

  Scenario: An operator's action reaches the live log like any other event
    Given "Priya" opens the live log of "acme"
    And the order service answers every order with 503
    And "acme" delivers an order webhook to "order-sync"
    When "dana@acme.example" cancels the run because "the order service is down for the night"
    Then the run is canceled
    And "Priya" sees the run exactly as its run log holds it

  Scenario: A run that failed and is retried by an operator goes on in the live log after its end
    Given "Priya" opens the live log of "acme"
    And the order service answers every order with 503
    And "acme" has a finished run of "order-sync"
    When the order service answers normally again
    And "dana@acme.example" retries "push" because "the order service is back"
    Then the run succeeds
    And "Priya" saw every event of the run as it happened

  Scenario: A viewer signed in to another project sees none of its runs
    Given the project "globex" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |
    And "Mallory", signed in to "globex", opens the live log of "acme"
    When "acme" has a finished run of "order-sync"
    And "globex" has a finished run of "order-sync"
    Then "Mallory" sees "globex"'s run but nothing of "acme"'s

  Scenario: A viewer of one project sees its run and nothing of another project's run of the same workflow
    Given the project "globex" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |
    And "Priya" opens the live log of "acme"
    When "globex" has a finished run of "order-sync"
    And "acme" has a finished run of "order-sync"
    Then "Priya" sees "acme"'s run but nothing of "globex"'s

  Scenario Outline: The live log refuses a viewer with <credential>
    When "Mallory" tries to open the live log of "acme" with <credential>
    Then the live log refuses "Mallory" because "<reason>"

    Examples:
      | credential                      | reason            |
      | an expired token                | Token has expired |
      | a token signed with another key | JwtSignatureError |
      | a token that is not a token     | MalformedJWT      |

  Scenario: A viewer with only the public key receives nothing
    When "Mallory" tries to open the live log of "acme" with no token of their own
    And "acme" has a finished run of "order-sync"
    Then "Mallory" received nothing

  Scenario: A live log that misses an event while subscribed is caught
    Given the live-log server will lose one event of every run
    And "Priya" opens the live log of "acme"
    When "acme" delivers an order webhook to "order-sync"
    Then the run succeeds
    And the live log shows that "Priya" missed an event while subscribed

  Scenario: A dashboard opened while a follow-up waits catches up on its start and follows it to its end
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And a run of "order-follow-up" that is waiting in "wait"
    When "José" opens the live log of "acme"
    And the clock moves forward 2 hours
    Then the run succeeds
    And "José" sees the run exactly as its run log holds it

  Scenario: A viewer whose connection stalls while an operator cancels a waiting follow-up sees the cancel once it recovers
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "Priya" opens the live log of "acme"
    And a run of "order-follow-up" that is waiting in "wait"
    When "Priya"'s connection stalls
    And "dana@acme.example" cancels the run because "the customer called to cancel"
    And "Priya"'s connection recovers
    Then the run is canceled
    And "Priya" sees the run exactly as its run log holds it
